-- Saved test definitions (store.DefinitionStore, docs/jobs.md "Saved test
-- definitions"): each change of a name is a new row (version numbered from
-- 1), so jobs started from an older version (jobs.definition,
-- jobs.definition_version) keep pointing at what they ran. spec is the
-- API's JSON object as given; created_at is INTEGER microseconds, UTC.

-- +goose Up
CREATE TABLE test_definitions (
	name       TEXT    NOT NULL CHECK (name <> ''),
	version    INTEGER NOT NULL CHECK (version > 0),
	owner      TEXT    NOT NULL DEFAULT '',
	spec       TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (name, version)
);
CREATE INDEX test_definitions_owner ON test_definitions (owner, name);

-- +goose Down
DROP TABLE test_definitions;
