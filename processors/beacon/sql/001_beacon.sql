-- beacon rows (CONTRACT.md section 1). Written by the `customer` stage through
-- the Postgres row sink: one row per accepted identification, upserted by its
-- primary key, so a replayed flush writes the same row again.
--
-- Range-partitioned by month of detected_at. No partition is created here:
-- registering the table in ts_partitioning (the runtime's own migration
-- tastesync/0002_partitioning.sql) lets the row sink create the month's
-- partition (customer_identities_YYYYMM, UTC months) the first time a row
-- needs it. Postgres requires the partition key in the primary key, hence
-- (event_id, detected_at); detected_at is fixed per event_id.
CREATE TABLE IF NOT EXISTS customer_identities (
    event_id      text NOT NULL,
    customer_id   text NOT NULL,
    store_id      text NOT NULL,
    beacon_id     text NOT NULL,
    device_id     text NOT NULL,
    confidence    double precision NOT NULL,
    detected_at   timestamptz NOT NULL,
    identified_at timestamptz NOT NULL,
    PRIMARY KEY (event_id, detected_at)
) PARTITION BY RANGE (detected_at);

CREATE INDEX IF NOT EXISTS customer_identities_customer_idx
    ON customer_identities (customer_id, detected_at);
CREATE INDEX IF NOT EXISTS customer_identities_store_idx
    ON customer_identities (store_id, detected_at);

INSERT INTO ts_partitioning (parent, unit) VALUES ('customer_identities', 'month')
    ON CONFLICT (parent) DO NOTHING;
