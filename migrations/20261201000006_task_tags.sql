-- Task tags (docs/DESIGN.md "Tags"): free labels an operator groups tasks
-- by ("team:payments", "billing"). EMF lag and failure metrics carry one
-- `Tag` dimension per tag, never the task id, so CloudWatch cardinality
-- stays bounded by the tags in use, not by the number of tasks.
--
-- The rules are the API's (shared/src/task/tags.rs): at most 10 tags, each
-- 1 to 64 characters of letters, digits and `_ . : / = -`, no duplicates.
-- The CHECK keeps plain SQL registration to the same rules (but for
-- duplicates, which the API drops and the metrics count once).
ALTER TABLE tasks
    ADD COLUMN tags TEXT[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT tasks_tags_valid CHECK (
        cardinality(tags) <= 10
        AND array_position(tags, NULL) IS NULL
        AND (cardinality(tags) = 0
             OR array_to_string(tags, ',') ~ '^[A-Za-z0-9_.:/=-]{1,64}(,[A-Za-z0-9_.:/=-]{1,64})*$')
    );

-- `GET /v1/tasks?tag=...` looks tasks up by tag.
CREATE INDEX tasks_tags_idx ON tasks USING gin (tags);

