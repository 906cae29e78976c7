-- Flow control per target. Every task belongs to a flow: by default the
-- `host:port` of its URL, or the `flow_key` set on the task (several hosts
-- of one service can share a key). `flows` holds the limits an operator
-- sets (plain SQL, the admin API or `sundial flows`); `flow_state` is the
-- shared bookkeeping the scanners and processors keep for every flow they
-- have seen (pacing slot, backoff, circuit breaker, retry budget).

-- The default flow of a URL: lower-cased `host:port`, the port made
-- explicit (80 for http, 443 for https). Mirrors `fire::pool::host_key`.
CREATE FUNCTION sundial_url_flow(url TEXT) RETURNS TEXT AS $$
DECLARE
    scheme TEXT := lower(substring(url FROM '^([A-Za-z][A-Za-z0-9+.-]*)://'));
    authority TEXT := lower(substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)'));
BEGIN
    IF authority IS NULL OR authority = '' THEN
        RETURN '';
    END IF;
    IF authority ~ ':[0-9]+$' THEN
        RETURN authority;
    END IF;
    RETURN authority || CASE scheme WHEN 'https' THEN ':443' ELSE ':80' END;
END
$$ LANGUAGE plpgsql IMMUTABLE;

ALTER TABLE tasks
    -- The flow key as the user set it; NULL: the URL's host and port.
    ADD COLUMN flow_key TEXT,
    -- The flow in force (`flow_key`, else the URL's), kept by trigger so
    -- that rows written with plain SQL get one too.
    ADD COLUMN flow TEXT,
    ADD CONSTRAINT tasks_flow_key_length CHECK (flow_key IS NULL OR length(flow_key) BETWEEN 1 AND 200);

CREATE FUNCTION tasks_set_flow() RETURNS trigger AS $$
BEGIN
    NEW.flow := coalesce(NEW.flow_key, sundial_url_flow(NEW.url));
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_set_flow
    BEFORE INSERT OR UPDATE OF url, flow_key ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_set_flow();

UPDATE tasks SET flow = coalesce(flow_key, sundial_url_flow(url));
ALTER TABLE tasks ALTER COLUMN flow SET NOT NULL;

CREATE INDEX tasks_flow_idx ON tasks (flow);

-- Limits per flow. A NULL limit means "the default from the settings"
-- (which, for rate and in-flight, is no limit beyond the global ones).
CREATE TABLE flows (
    key                    TEXT        PRIMARY KEY,
    -- Requests per second at most, paced at dispatch across all processors.
    rate_per_sec           DOUBLE PRECISION,
    -- Requests that may go out back to back before pacing applies.
    burst                  INTEGER     NOT NULL DEFAULT 1,
    -- Requests in flight per processor at most (adaptive concurrency's cap).
    max_in_flight          INTEGER,
    -- Retries as a share of requests, per 10-second window.
    retry_budget           DOUBLE PRECISION,
    -- Circuit breaker: consecutive failures that open the flow, within
    -- this window, and how long an open flow waits between probes.
    breaker_failures       INTEGER,
    breaker_window_secs    INTEGER,
    breaker_cooldown_secs  INTEGER,
    -- What becomes of occurrences missed while the flow is open: fire once
    -- when it closes (fire_latest) or record them as skipped (skip).
    on_open                TEXT        NOT NULL DEFAULT 'fire_latest',
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT flows_key_length CHECK (length(key) BETWEEN 1 AND 200),
    CONSTRAINT flows_rate_range CHECK (rate_per_sec IS NULL OR (rate_per_sec > 0 AND rate_per_sec <= 100000)),
    CONSTRAINT flows_burst_range CHECK (burst BETWEEN 1 AND 100000),
    CONSTRAINT flows_in_flight_range CHECK (max_in_flight IS NULL OR max_in_flight BETWEEN 1 AND 10000),
    CONSTRAINT flows_retry_budget_range CHECK (retry_budget IS NULL OR (retry_budget >= 0 AND retry_budget <= 10)),
    CONSTRAINT flows_breaker_failures_range CHECK (breaker_failures IS NULL OR breaker_failures BETWEEN 1 AND 10000),
    CONSTRAINT flows_breaker_window_range CHECK (breaker_window_secs IS NULL OR breaker_window_secs BETWEEN 1 AND 86400),
    CONSTRAINT flows_breaker_cooldown_range CHECK (breaker_cooldown_secs IS NULL OR breaker_cooldown_secs BETWEEN 1 AND 86400),
    CONSTRAINT flows_on_open_known CHECK (on_open IN ('fire_latest', 'skip'))
);

-- Shared state per flow, created on first use. Written by the scanner's
-- claim transaction (pacing) and by the processors' periodic flow sync
-- (backoff, breaker, retry budget), read by both.
CREATE TABLE flow_state (
    key              TEXT        PRIMARY KEY,
    -- Pacing: the theoretical arrival time of the next request (GCRA).
    next_slot        TIMESTAMPTZ,
    -- Shared backoff: nothing new is fired before this (429/503).
    not_before       TIMESTAMPTZ,
    -- Circuit breaker.
    breaker          TEXT        NOT NULL DEFAULT 'closed',
    failures         INTEGER     NOT NULL DEFAULT 0,
    failures_since   TIMESTAMPTZ,
    opened_at        TIMESTAMPTZ,
    closed_at        TIMESTAMPTZ,
    -- While open: the next probe may go out at this instant.
    probe_at         TIMESTAMPTZ,
    -- Retry budget: requests and retries in the current window.
    window_start     TIMESTAMPTZ,
    window_requests  BIGINT      NOT NULL DEFAULT 0,
    window_retries   BIGINT      NOT NULL DEFAULT 0,
    -- Figures for operators.
    throttled_total  BIGINT      NOT NULL DEFAULT 0,
    opened_total     BIGINT      NOT NULL DEFAULT 0,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT flow_state_breaker_known CHECK (breaker IN ('closed', 'open'))
);

-- Processors pull what changed since their last sync.
CREATE INDEX flow_state_updated_idx ON flow_state (updated_at);

-- The delay pacing added to a run, apart from its lateness.
ALTER TABLE task_runs ADD COLUMN pacing_ms INTEGER;
