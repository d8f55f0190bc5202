-- timestamptz keeps microseconds. A NULL expires_at never expires.

-- +goose Up
CREATE TABLE revocations (
	kind       text        NOT NULL CHECK (kind IN ('booking', 'subject', 'token')),
	value      text        NOT NULL CHECK (value <> ''),
	reason     text        NOT NULL DEFAULT '',
	actor      text        NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL,
	expires_at timestamptz,
	PRIMARY KEY (kind, value)
);
CREATE INDEX revocations_created_at ON revocations (created_at);
CREATE INDEX revocations_expires_at ON revocations (expires_at);

CREATE TABLE allowances (
	booking_id text        NOT NULL PRIMARY KEY CHECK (booking_id <> ''),
	actor      text        NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL,
	expires_at timestamptz
);
CREATE INDEX allowances_expires_at ON allowances (expires_at);

-- Ids come from the identity sequence while the writer holds the audit
-- advisory lock (see the Go code), so they are assigned in commit order.
CREATE TABLE audit (
	id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	time   timestamptz NOT NULL,
	actor  text        NOT NULL DEFAULT '',
	action text        NOT NULL DEFAULT '',
	target text        NOT NULL DEFAULT '',
	reason text        NOT NULL DEFAULT '',
	detail text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_time ON audit (time);

-- +goose Down
DROP TABLE audit;
DROP TABLE allowances;
DROP TABLE revocations;
