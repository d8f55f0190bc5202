package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// The leases table is described in migrations/00003_leases.sql. Expiries
// are set from and compared with the database's now(), so every node
// measures a lease on the same clock.

var _ store.LeaseStore = (*Store)(nil)

// AcquireLease implements store.LeaseStore. The upsert takes the row's
// lock: of concurrent callers for an expired or free lease one writes, and
// the others see its row and are refused.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (held bool, until time.Time, err error) {
	if err := store.ValidateLease(name, holder); err != nil {
		return false, time.Time{}, err
	}
	if err := store.ValidateLeaseTTL(ttl); err != nil {
		return false, time.Time{}, err
	}
	err = s.inTx(ctx, fmt.Sprintf("acquire lease %q", name), func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO leases (name, holder, expires_at)
			VALUES ($1, $2, now() + $3::bigint * interval '1 microsecond')
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
				WHERE leases.holder = excluded.holder OR leases.expires_at <= now()
			RETURNING expires_at`, name, holder, ttl.Microseconds()).Scan(&until)
		if err == nil {
			held = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Held by another holder; it may have been released since.
		err = tx.QueryRow(ctx, `SELECT expires_at FROM leases WHERE name = $1`, name).Scan(&until)
		if errors.Is(err, pgx.ErrNoRows) {
			until = time.Time{}
			return nil
		}
		return err
	})
	if err != nil {
		return false, time.Time{}, err
	}
	if !until.IsZero() {
		until = until.UTC()
	}
	return held, until, nil
}

// ReleaseLease implements store.LeaseStore.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if err := store.ValidateLease(name, holder); err != nil {
		return err
	}
	return s.inTx(ctx, fmt.Sprintf("release lease %q", name), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder)
		return err
	})
}
