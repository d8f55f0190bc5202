-- Revisions of revocation changes (store.RevocationLog): a counter that
-- every Revoke and Unrevoke increments in its transaction, and the change
-- log it numbers. SQLite has one writer at a time, so revisions are taken
-- in commit order. Times are INTEGER microseconds since the Unix epoch, UTC;
-- a NULL expires_at never expires, a NULL keep_until is kept forever.

-- +goose Up
CREATE TABLE revocation_revision (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	revision INTEGER NOT NULL
);
INSERT INTO revocation_revision (id, revision) VALUES (1, 0);

-- A revoke: the revocation as stored after the change. An unrevoke: kind
-- and value removed, the actor and time of the change, and (allow = 1) the
-- allowance recorded with it, whose expiry is expires_at.
CREATE TABLE revocation_changes (
	revision   INTEGER PRIMARY KEY,
	op         TEXT    NOT NULL CHECK (op IN ('revoke', 'unrevoke')),
	kind       TEXT    NOT NULL,
	value      TEXT    NOT NULL,
	reason     TEXT    NOT NULL DEFAULT '',
	actor      TEXT    NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	expires_at INTEGER,
	allow      INTEGER NOT NULL DEFAULT 0 CHECK (allow IN (0, 1)),
	keep_until INTEGER
);
CREATE INDEX revocation_changes_keep_until ON revocation_changes (keep_until);
-- A change supersedes the earlier ones of its kind and value (store.RevocationLog).
CREATE INDEX revocation_changes_key ON revocation_changes (kind, value);

-- +goose Down
DROP TABLE revocation_changes;
DROP TABLE revocation_revision;
