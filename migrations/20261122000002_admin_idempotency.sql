-- Idempotency keys of the admin API: a client that retries
-- `POST /v1/tasks` with the same `Idempotency-Key` gets the task its first
-- request created instead of a duplicate-name error (or a second task).

CREATE TABLE admin_idempotency_keys (
    -- The client's key, as sent.
    key           TEXT        PRIMARY KEY,
    -- SHA-256 of the request as parsed, so the same key with another body
    -- is refused rather than answered with an unrelated task.
    request_hash  BYTEA       NOT NULL,
    -- The task the first request created; NULL once that task is deleted.
    task_id       BIGINT      REFERENCES tasks (id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT admin_idempotency_key_length CHECK (length(key) BETWEEN 1 AND 255)
);

-- Keys are kept for a day; expiry deletes by age.
CREATE INDEX admin_idempotency_keys_created_idx ON admin_idempotency_keys (created_at);
