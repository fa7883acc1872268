-- Status page sessions, kept in the store so that logging out or expiry
-- ends a session on the server (and on every relay sharing the database).
-- The cookie carries a random id; only its SHA-256 is stored, so reading
-- this table does not give anyone a working cookie.
CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY,          -- hex SHA-256 of the cookie's session id
    token_fp   TEXT NOT NULL,             -- which admin token opened it (HMAC fingerprint)
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL            -- ms; refused from then on, purged later
);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);
