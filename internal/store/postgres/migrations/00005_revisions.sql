-- Revisions of revocation changes (store.RevocationLog): a one-row counter
-- that every Revoke and Unrevoke increments in its transaction, and the
-- change log it numbers.
--
-- Not a sequence: nextval hands out numbers in call order, not commit
-- order, so a node polling for "changes after n" could see n+1 committed,
-- move past n, and never see n when it commits later. The counter row is
-- locked by the UPDATE that takes a number until its transaction commits,
-- so revisions become visible in increasing order.

-- +goose Up
CREATE TABLE revocation_revision (
	id       integer PRIMARY KEY CHECK (id = 1),
	revision bigint  NOT NULL
);
INSERT INTO revocation_revision (id, revision) VALUES (1, 0);

-- A revoke: the revocation as stored after the change. An unrevoke: kind
-- and value removed, the actor and time of the change, and (allow) the
-- allowance recorded with it, whose expiry is expires_at. A NULL
-- expires_at never expires; a NULL keep_until is kept forever.
CREATE TABLE revocation_changes (
	revision   bigint      PRIMARY KEY,
	op         text        NOT NULL CHECK (op IN ('revoke', 'unrevoke')),
	kind       text        NOT NULL,
	value      text        NOT NULL,
	reason     text        NOT NULL DEFAULT '',
	actor      text        NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL,
	expires_at timestamptz,
	allow      boolean     NOT NULL DEFAULT false,
	keep_until timestamptz
);
CREATE INDEX revocation_changes_keep_until ON revocation_changes (keep_until);
-- A change supersedes the earlier ones of its kind and value (store.RevocationLog).
CREATE INDEX revocation_changes_key ON revocation_changes (kind, value);

-- +goose Down
DROP TABLE revocation_changes;
DROP TABLE revocation_revision;
