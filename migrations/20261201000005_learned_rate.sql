-- Adaptive rate per flow (docs/DESIGN.md "Flow control"): a flow without
-- an operator's rate that answers 429 gets a learned rate, shared by every
-- processor and the scanner's pacing, from what the target admitted in the
-- last whole second. It grows slowly while calm and is dropped after a
-- minute without a 429.
ALTER TABLE flow_state
    -- Requests per second in force for the flow while it has no operator
    -- rate (`flows.rate_per_sec`); NULL: none learned.
    ADD COLUMN learned_rate      DOUBLE PRECISION,
    -- When the current learning episode began (the first 429 after calm).
    ADD COLUMN learned_at        TIMESTAMPTZ,
    -- The last 429 any processor reported.
    ADD COLUMN throttled_at      TIMESTAMPTZ,
    -- Admitted (answered, not 429) requests in the wall-clock second
    -- starting at `second_start`, and in the second before it.
    ADD COLUMN second_start      TIMESTAMPTZ,
    ADD COLUMN second_admitted   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN previous_admitted BIGINT NOT NULL DEFAULT 0,
    ADD CONSTRAINT flow_state_learned_rate_positive CHECK (learned_rate IS NULL OR learned_rate > 0);
