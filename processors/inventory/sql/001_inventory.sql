-- inventory rows (CONTRACT.md section 3). Written by the inventory processor
-- through the Postgres row sink: `products` is upserted whole on every change
-- of a product (creation, stock adjustment, accepted purchase); `purchases`
-- gets one row per purchase_id, written once when the purchase is decided.
CREATE TABLE IF NOT EXISTS products (
    product_id  text PRIMARY KEY,
    name        text NOT NULL,
    description text,
    price       bigint NOT NULL CHECK (price >= 0),
    stock       integer NOT NULL CHECK (stock >= 0),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS purchases (
    purchase_id text PRIMARY KEY,
    user_id     text NOT NULL,
    product_id  text NOT NULL,
    quantity    integer NOT NULL,
    total_price bigint,
    status      text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason      text CHECK (reason IN ('INSUFFICIENT_STOCK', 'UNKNOWN_PRODUCT', 'INVALID_QUANTITY')),
    decided_at  timestamptz NOT NULL,
    CHECK ((status = 'accepted') = (reason IS NULL))
);

CREATE INDEX IF NOT EXISTS purchases_user_id_idx ON purchases (user_id, decided_at);
CREATE INDEX IF NOT EXISTS purchases_product_id_idx ON purchases (product_id);
