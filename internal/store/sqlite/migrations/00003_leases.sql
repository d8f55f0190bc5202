-- Named leases (store.LeaseStore): who holds one, and until when.
--
-- expires_at is INTEGER microseconds since the Unix epoch, UTC, on the
-- store's clock (sqlite.Options.Now). A row whose expires_at has passed is
-- free: the next AcquireLease overwrites it.

-- +goose Up
CREATE TABLE leases (
	name       TEXT    NOT NULL PRIMARY KEY CHECK (name <> ''),
	holder     TEXT    NOT NULL CHECK (holder <> ''),
	expires_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE leases;
