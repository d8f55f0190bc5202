-- Tests as first-class things (docs/jobs.md, "Matrix parameters",
-- "Filtering and export"):
--   parent_id: the matrix job a job is one combination of ('' for a job a
--              client created); listings show jobs without a parent unless
--              asked for a parent's children (jobs_parent_id);
--   matrix:    the parameters given several values, a JSON array of
--              {"name","values"} objects in the order given ('[]' when none);
--   labels:    the job's labels, a JSON array of "key=value" strings;
--   definition, definition_version: the saved test definition the job was
--              started from ('' and 0 when none).

-- +goose Up
ALTER TABLE jobs ADD COLUMN parent_id TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN matrix TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN definition TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN definition_version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_parent_id ON jobs (parent_id);
CREATE INDEX jobs_run_id ON jobs (run_id);
CREATE INDEX jobs_definition ON jobs (definition, definition_version);

-- +goose Down
DROP INDEX jobs_definition;
DROP INDEX jobs_run_id;
DROP INDEX jobs_parent_id;
ALTER TABLE jobs DROP COLUMN definition_version;
ALTER TABLE jobs DROP COLUMN definition;
ALTER TABLE jobs DROP COLUMN labels;
ALTER TABLE jobs DROP COLUMN matrix;
ALTER TABLE jobs DROP COLUMN parent_id;
