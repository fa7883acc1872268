-- The fetch stage: a feature-service webhook carries only a changesUrl,
-- so a message whose routes need the edited features gets one fetch job,
-- on the same lease/retry machinery as deliveries. Deliveries that wait
-- for it are stored 'pending' with next_attempt_at = 9223372036854775807
-- ("parked": never due); completing the fetch makes them due in the same
-- transaction, and a dead fetch makes them dead with its reason.
CREATE TABLE fetches (
    message_id       TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    source           TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'in_flight', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- pending: when due; in_flight: when the lease ends (then due again).
    next_attempt_at  BIGINT NOT NULL,
    lease_token      TEXT,
    last_error       TEXT,
    cycle_started_at BIGINT NOT NULL,
    changes          TEXT,                  -- the changes document (JSON), once done
    summary          TEXT,                  -- per-layer counts (JSON), once done
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
-- The fetch claim: due jobs in due order, over the waiting statuses only.
CREATE INDEX fetches_queue ON fetches (next_attempt_at)
    WHERE status IN ('pending', 'in_flight');
