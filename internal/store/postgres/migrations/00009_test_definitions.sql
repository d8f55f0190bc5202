-- Saved test definitions (store.DefinitionStore, docs/jobs.md "Saved test
-- definitions"): each change of a name is a new row (version numbered from
-- 1), so jobs started from an older version (jobs.definition,
-- jobs.definition_version) keep pointing at what they ran. spec is the
-- API's JSON object as given. Names are COLLATE "C": listed in byte order,
-- as in SQLite.

-- +goose Up
CREATE TABLE test_definitions (
	name       text        COLLATE "C" NOT NULL CHECK (name <> ''),
	version    integer     NOT NULL CHECK (version > 0),
	owner      text        NOT NULL DEFAULT '',
	spec       text        NOT NULL,
	created_at timestamptz NOT NULL,
	PRIMARY KEY (name, version)
);
CREATE INDEX test_definitions_owner ON test_definitions (owner, name);

-- +goose Down
DROP TABLE test_definitions;
