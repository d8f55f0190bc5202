-- Schedules of saved test definitions (store.ScheduleStore, docs/jobs.md
-- "Scheduling"): one per definition name. next_at and created_at are
-- INTEGER microseconds, UTC; every_us is the period in microseconds (0:
-- once). The node holding the timer lease fires what is due, moving
-- next_at with a compare-and-set so a firing runs once.

-- +goose Up
CREATE TABLE test_schedules (
	definition  TEXT    NOT NULL PRIMARY KEY CHECK (definition <> ''),
	owner       TEXT    NOT NULL DEFAULT '',
	every_us    INTEGER NOT NULL CHECK (every_us >= 0),
	next_at     INTEGER NOT NULL,
	max_running INTEGER NOT NULL CHECK (max_running > 0),
	created_at  INTEGER NOT NULL
);

-- +goose Down
DROP TABLE test_schedules;
