-- storybook rows (CONTRACT.md section 4). Written by the storybook processor
-- through the Postgres row sink: `books` is upserted whole on every change of
-- a book (a deleted book keeps its row with deleted_at set), `book_pages` rows
-- are upserted and deleted one page at a time.
CREATE TABLE IF NOT EXISTS books (
    book_id         text PRIMARY KEY,
    user_id         text NOT NULL,
    title           text NOT NULL,
    cover_image_url text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);

CREATE INDEX IF NOT EXISTS books_user_id_idx ON books (user_id);

CREATE TABLE IF NOT EXISTS book_pages (
    book_id    text NOT NULL,
    page_no    integer NOT NULL CHECK (page_no >= 1),
    text       text NOT NULL,
    image_url  text,
    audio_url  text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (book_id, page_no)
);
