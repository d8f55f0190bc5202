-- Jobs, their runs and the agents seen (store.JobStore).
--
-- Times are INTEGER microseconds since the Unix epoch, UTC; NULL is the
-- zero time ("not started", "never", ...). exec_duration is INTEGER
-- microseconds, 0 for unlimited. JSON is kept as TEXT (see jobcodec.go):
-- params is an object of strings ('{}' when empty), agents and labels are
-- arrays of strings ('[]' when empty), files is an array of
-- {"name","size","sha256","path"} objects ('[]' when empty); metrics and
-- actions are the JSON text as given, NULL when absent.
--
-- runs rows are deleted with their job (ON DELETE CASCADE; the store opens
-- every connection with foreign_keys on).

-- +goose Up
CREATE TABLE jobs (
	id            TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
	run_id        TEXT    NOT NULL DEFAULT '',
	owner         TEXT    NOT NULL DEFAULT '',
	action        TEXT    NOT NULL DEFAULT '',
	targets       TEXT    NOT NULL DEFAULT '',
	params        TEXT    NOT NULL DEFAULT '{}',
	phase         TEXT    NOT NULL,
	agents        TEXT    NOT NULL DEFAULT '[]',
	created_at    INTEGER NOT NULL,
	started_at    INTEGER,
	ended_at      INTEGER,
	quote         INTEGER,
	destruction   INTEGER,
	exec_duration INTEGER NOT NULL DEFAULT 0,
	error_type    TEXT    NOT NULL DEFAULT '',
	error_summary TEXT    NOT NULL DEFAULT '',
	updated_at    INTEGER NOT NULL
);
CREATE INDEX jobs_owner_created_at ON jobs (owner, created_at);
CREATE INDEX jobs_created_at ON jobs (created_at);
CREATE INDEX jobs_phase ON jobs (phase);
CREATE INDEX jobs_destruction ON jobs (destruction);

CREATE TABLE runs (
	job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	agent_id   TEXT    NOT NULL CHECK (agent_id <> ''),
	state      TEXT    NOT NULL DEFAULT '',
	exit_code  INTEGER NOT NULL DEFAULT -1,
	error      TEXT    NOT NULL DEFAULT '',
	started_at INTEGER,
	ended_at   INTEGER,
	stdout     TEXT    NOT NULL DEFAULT '',
	stderr     TEXT    NOT NULL DEFAULT '',
	metrics    TEXT,
	files      TEXT    NOT NULL DEFAULT '[]',
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (job_id, agent_id)
);

CREATE TABLE agents (
	id          TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
	labels      TEXT    NOT NULL DEFAULT '[]',
	actions     TEXT,
	version     TEXT    NOT NULL DEFAULT '',
	node        TEXT    NOT NULL DEFAULT '',
	connected   INTEGER NOT NULL DEFAULT 0 CHECK (connected IN (0, 1)),
	first_seen  INTEGER,
	last_seen   INTEGER,
	remote_addr TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX agents_node ON agents (node);

-- +goose Down
DROP TABLE agents;
DROP TABLE runs;
DROP TABLE jobs;
