-- Times are INTEGER microseconds since the Unix epoch, UTC. A NULL
-- expires_at never expires.

-- +goose Up
CREATE TABLE revocations (
	kind       TEXT    NOT NULL CHECK (kind IN ('booking', 'subject', 'token')),
	value      TEXT    NOT NULL CHECK (value <> ''),
	reason     TEXT    NOT NULL DEFAULT '',
	actor      TEXT    NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	expires_at INTEGER,
	PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX revocations_created_at ON revocations (created_at);
CREATE INDEX revocations_expires_at ON revocations (expires_at);

CREATE TABLE allowances (
	booking_id TEXT    NOT NULL PRIMARY KEY CHECK (booking_id <> ''),
	actor      TEXT    NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX allowances_expires_at ON allowances (expires_at);

-- AUTOINCREMENT: ids are never reused, even after the newest rows are deleted.
CREATE TABLE audit (
	id     INTEGER PRIMARY KEY AUTOINCREMENT,
	time   INTEGER NOT NULL,
	actor  TEXT    NOT NULL DEFAULT '',
	action TEXT    NOT NULL DEFAULT '',
	target TEXT    NOT NULL DEFAULT '',
	reason TEXT    NOT NULL DEFAULT '',
	detail TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_time ON audit (time);

-- +goose Down
DROP TABLE audit;
DROP TABLE allowances;
DROP TABLE revocations;
