-- user rows (CONTRACT.md section 2). Written by the user processor through the
-- Postgres row sink: `users` is upserted whole on every change of a user (a
-- deleted user keeps the row with deleted_at set; registering again sets it
-- back to NULL), `user_preferences` is upserted whole at registration (empty
-- lists, taste {}, updated_at NULL: never set) and on every PreferencesSet that
-- changes something, and deleted with the user.
CREATE TABLE IF NOT EXISTS users (
    user_id           text PRIMARY KEY,
    email             text NOT NULL,
    display_name      text NOT NULL,
    profile_image_url text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz
);

CREATE TABLE IF NOT EXISTS user_preferences (
    user_id              text PRIMARY KEY,
    dietary_restrictions text[] NOT NULL DEFAULT '{}',
    allergies            text[] NOT NULL DEFAULT '{}',
    favorite_cuisines    text[] NOT NULL DEFAULT '{}',
    taste                jsonb NOT NULL DEFAULT '{}',
    updated_at           timestamptz
);
