package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// takeRevision takes the next revision (store.RevocationLog). The counter
// row stays locked until the transaction ends, so revisions commit in
// increasing order (the migration says why this is not a sequence). Take
// it before the change's other locks (and before appendAudit's), so that
// every revision-taking transaction locks in one order.
func takeRevision(ctx context.Context, tx pgx.Tx) (int64, error) {
	var revision int64
	if err := tx.QueryRow(ctx, `UPDATE revocation_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision`).Scan(&revision); err != nil {
		return 0, fmt.Errorf("take a revision: %w", err)
	}
	return revision, nil
}

// recordChange records the change under revision, replacing the changes
// it supersedes; keepUntil zero keeps it forever.
func recordChange(ctx context.Context, tx pgx.Tx, revision int64, op store.RevocationOp, r store.Revocation, allow *store.Allowance, keepUntil time.Time) error {
	q := `DELETE FROM revocation_changes WHERE kind = $1 AND value = $2 RETURNING keep_until`
	if store.KeepsAllowance(op, allow) {
		q = `DELETE FROM revocation_changes WHERE kind = $1 AND value = $2 AND NOT (op = 'unrevoke' AND allow) RETURNING keep_until`
	}
	rows, err := tx.Query(ctx, q, string(r.Kind), r.Value)
	if err != nil {
		return fmt.Errorf("supersede changes: %w", err)
	}
	kept, err := pgx.CollectRows(rows, pgx.RowTo[*time.Time])
	if err != nil {
		return fmt.Errorf("supersede changes: %w", err)
	}
	for _, k := range kept {
		keepUntil = store.LaterKeep(keepUntil, fromNull(k))
	}
	actor, created, expires, allowed := r.Actor, r.CreatedAt, r.ExpiresAt, false
	if allow != nil {
		actor, created, expires, allowed = allow.Actor, allow.CreatedAt, allow.ExpiresAt, true
	}
	_, err = tx.Exec(ctx, `INSERT INTO revocation_changes (revision, op, kind, value, reason, actor, created_at, expires_at, allow, keep_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		revision, string(op), string(r.Kind), r.Value, r.Reason, actor, utc(created), nullTime(expires), allowed, nullTime(keepUntil))
	if err != nil {
		return fmt.Errorf("record the change: %w", err)
	}
	return nil
}

// purgeChanges deletes the changes the log no longer needs at now.
func purgeChanges(ctx context.Context, tx pgx.Tx, now time.Time) error {
	_, err := tx.Exec(ctx, `DELETE FROM revocation_changes WHERE keep_until <= $1`, now)
	return err
}

// RevocationRevision implements store.RevocationLog.
func (s *Store) RevocationRevision(ctx context.Context) (int64, error) {
	var revision int64
	err := s.query(ctx, "revocation revision", func(conn *pgxpool.Conn) error {
		return conn.QueryRow(ctx, `SELECT revision FROM revocation_revision WHERE id = 1`).Scan(&revision)
	})
	if err != nil {
		return 0, err
	}
	return revision, nil
}

// RevocationChanges implements store.RevocationLog: a read-only repeatable
// read transaction, so the revision and the changes come from one
// snapshot.
func (s *Store) RevocationChanges(ctx context.Context, after int64, limit int) (store.RevocationChanges, error) {
	limit = store.RevocationChangesLimit(limit)
	var out store.RevocationChanges
	err := s.query(ctx, "revocation changes", func(conn *pgxpool.Conn) error {
		out = store.RevocationChanges{}
		return pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT revision FROM revocation_revision WHERE id = 1`).Scan(&out.Revision); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT revision, op, kind, value, reason, actor, created_at, expires_at, allow
				FROM revocation_changes WHERE revision > $1 ORDER BY revision LIMIT $2`, after, limit)
			if err != nil {
				return err
			}
			out.Changes, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.RevocationChange, error) {
				var (
					c       store.RevocationChange
					op      string
					kind    string
					expires *time.Time
					allowed bool
				)
				err := row.Scan(&c.Revision, &op, &kind, &c.Revocation.Value, &c.Revocation.Reason, &c.Revocation.Actor, &c.Revocation.CreatedAt, &expires, &allowed)
				c.Op, c.Revocation.Kind, c.Revocation.CreatedAt = store.RevocationOp(op), store.RevocationKind(kind), c.Revocation.CreatedAt.UTC()
				if allowed {
					c.Allow = &store.Allowance{BookingID: c.Revocation.Value, Actor: c.Revocation.Actor, CreatedAt: c.Revocation.CreatedAt, ExpiresAt: fromNull(expires)}
				} else {
					c.Revocation.ExpiresAt = fromNull(expires)
				}
				return c, err
			})
			return err
		})
	})
	if err != nil {
		return store.RevocationChanges{}, err
	}
	if len(out.Changes) == limit {
		out.Revision, out.More = out.Changes[limit-1].Revision, true
	}
	return out, nil
}
