package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// The leases table is described in migrations/00003_leases.sql. Its
// clock is Options.Now: one process uses a SQLite file at a time, so its
// clock is the only one.

var _ store.LeaseStore = (*Store)(nil)

// AcquireLease implements store.LeaseStore.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (held bool, until time.Time, err error) {
	if err := store.ValidateLease(name, holder); err != nil {
		return false, time.Time{}, err
	}
	if err := store.ValidateLeaseTTL(ttl); err != nil {
		return false, time.Time{}, err
	}
	err = s.inTx(ctx, "acquire lease", func(tx *sql.Tx) error {
		now := micros(s.now())
		var expires int64
		err := tx.QueryRowContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
				WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4
			RETURNING expires_at`, name, holder, now+ttl.Microseconds(), now).Scan(&expires)
		if err == nil {
			held, until = true, fromMicros(expires)
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// Held by another holder until expires_at (in this transaction,
		// so it is still there).
		if err := tx.QueryRowContext(ctx, `SELECT expires_at FROM leases WHERE name = ?`, name).Scan(&expires); err != nil {
			return err
		}
		until = fromMicros(expires)
		return nil
	})
	if err != nil {
		return false, time.Time{}, err
	}
	return held, until, nil
}

// ReleaseLease implements store.LeaseStore.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if err := store.ValidateLease(name, holder); err != nil {
		return err
	}
	return s.inTx(ctx, "release lease", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder)
		return err
	})
}
