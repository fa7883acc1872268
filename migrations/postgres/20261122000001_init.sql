-- hookrelay schema, Postgres. Times are milliseconds since the Unix epoch.

CREATE TABLE messages (
    id           TEXT PRIMARY KEY,           -- UUIDv7, sorts by arrival
    source       TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    headers      TEXT NOT NULL,              -- JSON object, never credentials
    body         BYTEA NOT NULL,             -- forwarded bytes
    events       TEXT NOT NULL               -- JSON array of normalised events
);
CREATE INDEX messages_received ON messages (received_at);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    message_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    sink             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'in_flight', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- pending: when due; in_flight: when the lease ends (then due again).
    next_attempt_at  BIGINT NOT NULL,
    lease_token      TEXT,
    events           TEXT NOT NULL,          -- JSON array of matched event indexes
    last_status      INTEGER,
    last_error       TEXT,
    cycle_started_at BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (sink, status, next_attempt_at);
CREATE INDEX deliveries_message ON deliveries (message_id);
CREATE INDEX deliveries_status_updated ON deliveries (status, updated_at);

CREATE TABLE attempts (
    id          BIGSERIAL PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status      INTEGER,
    error       TEXT,
    response    TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

CREATE TABLE dedupe (
    source     TEXT NOT NULL,
    key        TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX dedupe_created ON dedupe (created_at);

CREATE TABLE sink_state (
    sink       TEXT PRIMARY KEY,
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    reason     TEXT,
    updated_at BIGINT NOT NULL
);
