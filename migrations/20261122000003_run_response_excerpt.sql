-- The first KiB of the target's answer, for operators reading run history
-- (the processor reads at most 64 KiB of a body and keeps this excerpt).
ALTER TABLE task_runs
    ADD COLUMN response_excerpt TEXT,
    ADD CONSTRAINT task_runs_response_excerpt_size
        CHECK (response_excerpt IS NULL OR octet_length(response_excerpt) <= 4096);
