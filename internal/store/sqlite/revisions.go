package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// recordChange takes the next revision and records the change under it
// (store.RevocationLog), replacing the changes it supersedes. keepUntil
// zero keeps it forever. The single writer connection makes revisions
// follow commit order.
func recordChange(ctx context.Context, tx *sql.Tx, op store.RevocationOp, r store.Revocation, allow *store.Allowance, keepUntil time.Time) (int64, error) {
	q := `DELETE FROM revocation_changes WHERE kind = ? AND value = ? RETURNING keep_until`
	if store.KeepsAllowance(op, allow) {
		q = `DELETE FROM revocation_changes WHERE kind = ? AND value = ? AND NOT (op = 'unrevoke' AND allow = 1) RETURNING keep_until`
	}
	rows, err := tx.QueryContext(ctx, q, string(r.Kind), r.Value)
	if err != nil {
		return 0, fmt.Errorf("supersede changes: %w", err)
	}
	for rows.Next() {
		var k sql.NullInt64
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return 0, fmt.Errorf("supersede changes: %w", err)
		}
		keepUntil = store.LaterKeep(keepUntil, fromNullMicros(k))
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("supersede changes: %w", err)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("supersede changes: %w", err)
	}
	var revision int64
	if err := tx.QueryRowContext(ctx, `UPDATE revocation_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision`).Scan(&revision); err != nil {
		return 0, fmt.Errorf("take a revision: %w", err)
	}
	actor, created, expires, allowed := r.Actor, r.CreatedAt, r.ExpiresAt, 0
	if allow != nil {
		actor, created, expires, allowed = allow.Actor, allow.CreatedAt, allow.ExpiresAt, 1
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO revocation_changes (revision, op, kind, value, reason, actor, created_at, expires_at, allow, keep_until)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		revision, string(op), string(r.Kind), r.Value, r.Reason, actor, micros(created), nullMicros(expires), allowed, nullMicros(keepUntil))
	if err != nil {
		return 0, fmt.Errorf("record the change: %w", err)
	}
	return revision, nil
}

// purgeChanges deletes the changes the log no longer needs at now.
func purgeChanges(ctx context.Context, tx *sql.Tx, now time.Time) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM revocation_changes WHERE keep_until IS NOT NULL AND keep_until <= ?`, micros(now))
	return err
}

// RevocationRevision implements store.RevocationLog.
func (s *Store) RevocationRevision(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("sqlite: revocation revision: %w", errClosed)
	}
	var revision int64
	if err := s.read.QueryRowContext(ctx, `SELECT revision FROM revocation_revision WHERE id = 1`).Scan(&revision); err != nil {
		return 0, s.wrap("revocation revision", err)
	}
	return revision, nil
}

// RevocationChanges implements store.RevocationLog: one read transaction,
// which WAL gives one snapshot.
func (s *Store) RevocationChanges(ctx context.Context, after int64, limit int) (store.RevocationChanges, error) {
	const op = "revocation changes"
	if s.closed.Load() {
		return store.RevocationChanges{}, fmt.Errorf("sqlite: %s: %w", op, errClosed)
	}
	limit = store.RevocationChangesLimit(limit)
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return store.RevocationChanges{}, s.wrap(op, err)
	}
	defer tx.Rollback()
	var out store.RevocationChanges
	if err := tx.QueryRowContext(ctx, `SELECT revision FROM revocation_revision WHERE id = 1`).Scan(&out.Revision); err != nil {
		return store.RevocationChanges{}, s.wrap(op, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT revision, op, kind, value, reason, actor, created_at, expires_at, allow
		FROM revocation_changes WHERE revision > ? ORDER BY revision LIMIT ?`, after, limit)
	if err != nil {
		return store.RevocationChanges{}, s.wrap(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			c       store.RevocationChange
			opName  string
			kind    string
			created int64
			expires sql.NullInt64
			allowed bool
		)
		if err := rows.Scan(&c.Revision, &opName, &kind, &c.Revocation.Value, &c.Revocation.Reason, &c.Revocation.Actor, &created, &expires, &allowed); err != nil {
			return store.RevocationChanges{}, s.wrap(op, err)
		}
		c.Op, c.Revocation.Kind, c.Revocation.CreatedAt = store.RevocationOp(opName), store.RevocationKind(kind), fromMicros(created)
		if allowed {
			c.Allow = &store.Allowance{BookingID: c.Revocation.Value, Actor: c.Revocation.Actor, CreatedAt: c.Revocation.CreatedAt, ExpiresAt: fromNullMicros(expires)}
		} else {
			c.Revocation.ExpiresAt = fromNullMicros(expires)
		}
		out.Changes = append(out.Changes, c)
	}
	if err := rows.Err(); err != nil {
		return store.RevocationChanges{}, s.wrap(op, err)
	}
	if len(out.Changes) == limit {
		out.Revision, out.More = out.Changes[limit-1].Revision, true
	}
	return out, nil
}
