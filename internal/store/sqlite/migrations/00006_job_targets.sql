-- Every targeted agent accounted for (docs/jobs.md, "Targets and fates"):
-- a job records which of its targets must run (requirement: '' all of
-- them, 'available' only those connected at RUN), and each target has a
-- run whose state is its fate (waiting, queued, …, skipped). The hub finds
-- an agent's unfinished runs (the runs queued for its free slots) by
-- runs_agent_state.

-- +goose Up
ALTER TABLE jobs ADD COLUMN requirement TEXT NOT NULL DEFAULT '';
CREATE INDEX runs_agent_state ON runs (agent_id, state);

-- +goose Down
DROP INDEX runs_agent_state;
ALTER TABLE jobs DROP COLUMN requirement;
