-- Dashboard sessions (store.SessionStore).
--
-- id_hash is the SHA-256 of the session id (store.SessionIDHash): the id
-- itself, which the browser's encrypted cookie carries, is never stored.
-- created_at and expires_at are INTEGER microseconds since the Unix epoch,
-- UTC. role is the role's name ("viewer", "operator", "admin").

-- +goose Up
CREATE TABLE sessions (
	id_hash    BLOB    NOT NULL PRIMARY KEY CHECK (length(id_hash) = 32),
	subject    TEXT    NOT NULL CHECK (subject <> ''),
	name       TEXT    NOT NULL,
	email      TEXT    NOT NULL,
	provider   TEXT    NOT NULL,
	role       TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_subject ON sessions (subject);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- +goose Down
DROP TABLE sessions;
