-- Named leases (store.LeaseStore): who holds one, and until when.
--
-- expires_at is on the database's clock: AcquireLease compares it with
-- now() and sets it from now(), so the nodes' own clocks never matter. A
-- row whose expires_at has passed is free: the next AcquireLease
-- overwrites it.

-- +goose Up
CREATE TABLE leases (
	name       text        COLLATE "C" NOT NULL PRIMARY KEY CHECK (name <> ''),
	holder     text        NOT NULL CHECK (holder <> ''),
	expires_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE leases;
