-- Dashboard sessions (store.SessionStore), shared by every node of a
-- cluster: a login on one node is valid on all, and a logout or a
-- revocation on one ends it on all.
--
-- id_hash is the SHA-256 of the session id (store.SessionIDHash): the id
-- itself, which the browser's encrypted cookie carries, is never stored.
-- Expiry is compared with the now the caller passes (the node's clock).
-- role is the role's name ("viewer", "operator", "admin").

-- +goose Up
CREATE TABLE sessions (
	id_hash    bytea       NOT NULL PRIMARY KEY CHECK (length(id_hash) = 32),
	subject    text        COLLATE "C" NOT NULL CHECK (subject <> ''),
	name       text        NOT NULL,
	email      text        NOT NULL,
	provider   text        NOT NULL,
	role       text        NOT NULL,
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_subject ON sessions (subject);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- +goose Down
DROP TABLE sessions;
