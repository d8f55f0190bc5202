-- Jobs, their runs and the agents seen (store.JobStore).
--
-- timestamptz keeps microseconds; NULL is the zero time ("not started",
-- "never", ...). exec_duration is bigint microseconds, 0 for unlimited.
-- JSON is kept as text, not jsonb, so that metrics and actions come back
-- byte for byte (see jobcodec.go): params is an object of strings ('{}' when
-- empty), agents and labels are arrays of strings ('[]' when empty), files
-- is an array of {"name","size","sha256","path"} objects ('[]' when empty);
-- metrics and actions are the JSON text as given, NULL when absent.
--
-- Ids are COLLATE "C", so listings ordered by id are in byte order, as in
-- SQLite and Go, whatever the database's locale.

-- +goose Up
CREATE TABLE jobs (
	id            text        COLLATE "C" NOT NULL PRIMARY KEY CHECK (id <> ''),
	run_id        text        NOT NULL DEFAULT '',
	owner         text        NOT NULL DEFAULT '',
	action        text        NOT NULL DEFAULT '',
	targets       text        NOT NULL DEFAULT '',
	params        text        NOT NULL DEFAULT '{}',
	phase         text        NOT NULL,
	agents        text        NOT NULL DEFAULT '[]',
	created_at    timestamptz NOT NULL,
	started_at    timestamptz,
	ended_at      timestamptz,
	quote         timestamptz,
	destruction   timestamptz,
	exec_duration bigint      NOT NULL DEFAULT 0,
	error_type    text        NOT NULL DEFAULT '',
	error_summary text        NOT NULL DEFAULT '',
	updated_at    timestamptz NOT NULL
);
CREATE INDEX jobs_owner_created_at ON jobs (owner, created_at);
CREATE INDEX jobs_created_at ON jobs (created_at);
CREATE INDEX jobs_phase ON jobs (phase);
CREATE INDEX jobs_destruction ON jobs (destruction);

CREATE TABLE runs (
	job_id     text        COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	agent_id   text        COLLATE "C" NOT NULL CHECK (agent_id <> ''),
	state      text        NOT NULL DEFAULT '',
	exit_code  integer     NOT NULL DEFAULT -1,
	error      text        NOT NULL DEFAULT '',
	started_at timestamptz,
	ended_at   timestamptz,
	stdout     text        NOT NULL DEFAULT '',
	stderr     text        NOT NULL DEFAULT '',
	metrics    text,
	files      text        NOT NULL DEFAULT '[]',
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (job_id, agent_id)
);

CREATE TABLE agents (
	id          text        COLLATE "C" NOT NULL PRIMARY KEY CHECK (id <> ''),
	labels      text        NOT NULL DEFAULT '[]',
	actions     text,
	version     text        NOT NULL DEFAULT '',
	node        text        NOT NULL DEFAULT '',
	connected   boolean     NOT NULL DEFAULT false,
	first_seen  timestamptz,
	last_seen   timestamptz,
	remote_addr text        NOT NULL DEFAULT ''
);
CREATE INDEX agents_node ON agents (node);

-- +goose Down
DROP TABLE agents;
DROP TABLE runs;
DROP TABLE jobs;
