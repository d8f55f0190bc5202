-- Schedules of saved test definitions (store.ScheduleStore, docs/jobs.md
-- "Scheduling"): one per definition name. every_us is the period in
-- microseconds (0: once). The node holding the timer lease fires what is
-- due, moving next_at with a compare-and-set so a firing runs once.
-- Names are COLLATE "C": listed in byte order, as in SQLite.

-- +goose Up
CREATE TABLE test_schedules (
	definition  text        COLLATE "C" NOT NULL PRIMARY KEY CHECK (definition <> ''),
	owner       text        NOT NULL DEFAULT '',
	every_us    bigint      NOT NULL CHECK (every_us >= 0),
	next_at     timestamptz NOT NULL,
	max_running integer     NOT NULL CHECK (max_running > 0),
	created_at  timestamptz NOT NULL
);

-- +goose Down
DROP TABLE test_schedules;
