// Package postgres is the store backend for clusters: a PostgreSQL database
// shared by all nodes, used through a pgx connection pool, with its schema
// migrated at open from embedded SQL files (goose over pgx's database/sql
// driver, under a PostgreSQL advisory lock so that nodes starting together
// migrate one at a time).
//
// Errors caused by the server being unreachable or going away wrap
// store.ErrUnavailable: failures to get a connection from the pool
// (connection refused, DNS, TLS, a deadline while connecting, a closed
// pool), connections lost mid-query (EOF, reset, closed), deadlines, and
// server errors of SQLSTATE classes 08 (connection exception), 53
// (insufficient resources), 57P (shutdown, cannot connect now) and 58
// (system error). Constraint and data errors do not.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/switchboard-hub/switchboard/internal/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune Open. The zero value is ready to use.
type Options struct {
	// MaxConns caps the connection pool. Zero means pool_max_conns from
	// the URL, or pgx's default (the greater of 4 and the number of CPUs).
	MaxConns int32
	// ConnectTimeout bounds each connection attempt. Zero means
	// connect_timeout from the URL, or 5s.
	ConnectTimeout time.Duration
	// Logger receives migration messages. Nil discards them.
	Logger *slog.Logger
}

// Store is a store.Store on a PostgreSQL database. It is safe for
// concurrent use.
type Store struct {
	pool *pgxpool.Pool

	closed    atomic.Bool
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// auditLockKey names the transaction-level advisory lock held while audit
// events are inserted. Holding it from taking an id until commit makes ids
// visible in increasing order, so a reader paging with afterID never skips
// an event that commits late with a smaller id.
const auditLockKey int64 = 0x5377_6264_4175_6474 // "SwbdAudt"

// Open connects to the database at url (postgres://user:pass@host/db?...),
// checks that it answers, and migrates its schema to the newest embedded
// version. If the server cannot be reached the error wraps
// store.ErrUnavailable; if the database was migrated by a newer
// Switchboard, store.ErrSchemaTooNew.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err) // pgconn redacts the password
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.ConnectTimeout > 0 {
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	} else if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, wrap("open", err)
	}
	s := &Store{pool: pool}
	if err := s.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := s.migrate(ctx, opts.Logger); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrateLockKey names the session-level advisory lock held while
// migrating, so that nodes starting together migrate one at a time.
const migrateLockKey int64 = 0x5377_6264_4d69_6772 // "SwbdMigr"

func (s *Store) migrate(ctx context.Context, logger *slog.Logger) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	popts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	if logger != nil {
		popts = append(popts, goose.WithSlog(logger))
	} else {
		popts = append(popts, goose.WithLogger(goose.NopLogger()))
	}
	db := stdlib.OpenDBFromPool(s.pool) // closing it leaves the pool open
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, popts...)
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}

	// The lock is held by a connection of its own, outside the pool, and
	// released by closing it. (goose's own session locker polls every
	// few seconds; pg_advisory_lock wakes up as soon as the lock is free.)
	lockConn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return wrap("migrate: lock", err)
	}
	defer lockConn.Close(context.WithoutCancel(ctx))
	if _, err := lockConn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return wrap("migrate: lock", err)
	}

	current, target, err := p.GetVersions(ctx)
	if err != nil {
		return wrap("read schema version", err)
	}
	if current > target {
		return fmt.Errorf("postgres: %w: the database is at schema version %d, this binary knows versions up to %d; upgrade the switchboard binary",
			store.ErrSchemaTooNew, current, target)
	}
	if current < target {
		if _, err := p.Up(ctx); err != nil {
			return wrap("migrate", err)
		}
	}
	return nil
}

var errClosed = fmt.Errorf("postgres: %w: store is closed", store.ErrUnavailable)

// wrap prefixes err with the operation, marking it with
// store.ErrUnavailable if unavailable(err).
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// unavailable reports whether err means the server could not be reached or
// could not do the work for reasons that may pass.
func unavailable(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		code := pgErr.Code
		return strings.HasPrefix(code, "08") || // connection exception
			strings.HasPrefix(code, "53") || // insufficient resources: too many connections, disk full
			strings.HasPrefix(code, "57P") || // admin/crash shutdown, cannot connect now, database dropped
			strings.HasPrefix(code, "58") || // system error (I/O)
			code == "57014" && errors.Is(err, context.DeadlineExceeded) // canceled because our deadline passed
	}
	if errors.Is(err, context.Canceled) {
		return false // the caller gave up; the database may be fine
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// acquire takes a connection from the pool. Any failure here, except the
// caller canceling, means the database cannot be reached (or the store is
// closed).
func (s *Store) acquire(ctx context.Context, op string) (*pgxpool.Conn, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: %s: %w", op, errClosed)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("postgres: %s: %w", op, err)
		}
		return nil, fmt.Errorf("postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return conn, nil
}

// inTx runs fn in a transaction and commits it; any error rolls everything
// back.
func (s *Store) inTx(ctx context.Context, op string, fn func(pgx.Tx) error) error {
	conn, err := s.acquire(ctx, op)
	if err != nil {
		return err
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return wrap(op, err)
	}
	if err := fn(tx); err != nil {
		// If the rollback fails the connection is broken: the pool drops
		// it and the server rolls back.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		tx.Rollback(rctx)
		cancel()
		return wrap(op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap(op, err)
	}
	return nil
}

// nullTime stores the zero time ("never") as NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Truncate(time.Microsecond)
	return &t
}

func utc(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}

// appendAudit inserts events and sets their ids and times. Call it last in
// a transaction: it takes the audit lock, held until commit.
func appendAudit(ctx context.Context, tx pgx.Tx, evs []store.AuditEvent, now time.Time) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, auditLockKey); err != nil {
		return err
	}
	if len(evs) == 1 {
		ev := &evs[0]
		ev.Time = utc(orNow(ev.Time, now))
		return tx.QueryRow(ctx, `INSERT INTO audit (time, actor, action, target, reason, detail)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
			ev.Time, ev.Actor, ev.Action, ev.Target, ev.Reason, ev.Detail).Scan(&ev.ID)
	}
	// Many events: one statement, ids assigned in input order.
	times := make([]time.Time, len(evs))
	cols := make([][]string, 5)
	for i := range evs {
		ev := &evs[i]
		ev.Time = utc(orNow(ev.Time, now))
		times[i] = ev.Time
		for j, v := range []string{ev.Actor, ev.Action, ev.Target, ev.Reason, ev.Detail} {
			cols[j] = append(cols[j], v)
		}
	}
	rows, err := tx.Query(ctx, `INSERT INTO audit (time, actor, action, target, reason, detail)
		SELECT t, a, ac, ta, r, d FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS u(t, a, ac, ta, r, d, n)
		ORDER BY n
		RETURNING id`, times, cols[0], cols[1], cols[2], cols[3], cols[4])
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	if len(ids) != len(evs) {
		return fmt.Errorf("inserted %d audit events, expected %d", len(ids), len(evs))
	}
	// RETURNING order is not guaranteed; ids were assigned in ORDER BY n
	// order, so the sorted ids match the input order.
	slices.Sort(ids)
	for i := range evs {
		evs[i].ID = ids[i]
	}
	return nil
}

// Revoke implements store.Store.
func (s *Store) Revoke(ctx context.Context, r store.Revocation, ev store.AuditEvent) (int64, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	now := time.Now()
	var revision int64
	err := s.inTx(ctx, "revoke", func(tx pgx.Tx) error {
		// The revision first: its row lock, held until commit, orders
		// this change's commit after every change numbered before it.
		var err error
		if revision, err = takeRevision(ctx, tx); err != nil {
			return err
		}
		stored := r
		err = tx.QueryRow(ctx, `INSERT INTO revocations (kind, value, reason, actor, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (kind, value) DO UPDATE SET reason = excluded.reason, actor = excluded.actor, expires_at = excluded.expires_at
			RETURNING created_at`,
			string(r.Kind), r.Value, r.Reason, r.Actor, utc(orNow(r.CreatedAt, now)), nullTime(r.ExpiresAt)).Scan(&stored.CreatedAt)
		if err != nil {
			return err
		}
		if r.Kind == store.RevokeBooking {
			if _, err := tx.Exec(ctx, `DELETE FROM allowances WHERE booking_id = $1`, r.Value); err != nil {
				return err
			}
		}
		if err := recordChange(ctx, tx, revision, store.OpRevoke, stored, nil, r.ExpiresAt); err != nil {
			return err
		}
		return appendAudit(ctx, tx, []store.AuditEvent{ev}, now)
	})
	if err != nil {
		return 0, err
	}
	return revision, nil
}

// Unrevoke implements store.Store.
func (s *Store) Unrevoke(ctx context.Context, kind store.RevocationKind, value string, allow *store.Allowance, ev store.AuditEvent) (bool, int64, error) {
	if err := (store.Revocation{Kind: kind, Value: value}).Validate(); err != nil {
		return false, 0, err
	}
	if allow != nil {
		if kind != store.RevokeBooking {
			return false, 0, fmt.Errorf("postgres: unrevoke: an allowance needs kind %q, not %q", store.RevokeBooking, kind)
		}
		if allow.BookingID != "" && allow.BookingID != value {
			return false, 0, fmt.Errorf("postgres: unrevoke: allowance for booking %q does not match %q", allow.BookingID, value)
		}
	}
	now := time.Now()
	var (
		removed  bool
		revision int64
	)
	err := s.inTx(ctx, "unrevoke", func(tx pgx.Tx) error {
		var err error
		if revision, err = takeRevision(ctx, tx); err != nil { // first: see Revoke
			return err
		}
		var removedExpiry *time.Time
		err = tx.QueryRow(ctx, `DELETE FROM revocations WHERE kind = $1 AND value = $2 RETURNING expires_at`, string(kind), value).Scan(&removedExpiry)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			removed = true
		}
		var stored *store.Allowance
		if allow != nil {
			stored = &store.Allowance{BookingID: value, Actor: allow.Actor, CreatedAt: utc(orNow(allow.CreatedAt, now)), ExpiresAt: allow.ExpiresAt}
			_, err := tx.Exec(ctx, `INSERT INTO allowances (booking_id, actor, created_at, expires_at) VALUES ($1, $2, $3, $4)
				ON CONFLICT (booking_id) DO UPDATE SET actor = excluded.actor, created_at = excluded.created_at, expires_at = excluded.expires_at`,
				value, stored.Actor, stored.CreatedAt, nullTime(stored.ExpiresAt))
			if err != nil {
				return err
			}
		}
		change := store.Revocation{Kind: kind, Value: value, Actor: ev.Actor, CreatedAt: utc(orNow(ev.Time, now))}
		keep := store.ChangeKeepUntil(removed, fromNull(removedExpiry), stored, now)
		if err := recordChange(ctx, tx, revision, store.OpUnrevoke, change, stored, keep); err != nil {
			return err
		}
		return appendAudit(ctx, tx, []store.AuditEvent{ev}, now)
	})
	if err != nil {
		return false, 0, err
	}
	return removed, revision, nil
}

// query runs a read on one pooled connection.
func (s *Store) query(ctx context.Context, op string, fn func(*pgxpool.Conn) error) error {
	conn, err := s.acquire(ctx, op)
	if err != nil {
		return err
	}
	defer conn.Release()
	return wrap(op, fn(conn))
}

// Revocations implements store.Store.
func (s *Store) Revocations(ctx context.Context, kind store.RevocationKind, now time.Time) ([]store.Revocation, error) {
	if kind != "" && !kind.Valid() {
		return nil, fmt.Errorf("postgres: revocations: unknown kind %q", kind)
	}
	var out []store.Revocation
	err := s.query(ctx, "revocations", func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT kind, value, reason, actor, created_at, expires_at FROM revocations
			WHERE ($1 = '' OR kind = $1) AND (expires_at IS NULL OR expires_at > $2)
			ORDER BY created_at, kind, value`, string(kind), now)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Revocation, error) {
			var (
				r       store.Revocation
				kind    string
				expires *time.Time
			)
			err := row.Scan(&kind, &r.Value, &r.Reason, &r.Actor, &r.CreatedAt, &expires)
			r.Kind = store.RevocationKind(kind)
			r.CreatedAt = r.CreatedAt.UTC()
			r.ExpiresAt = fromNull(expires)
			return r, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Allowances implements store.Store.
func (s *Store) Allowances(ctx context.Context, now time.Time) ([]store.Allowance, error) {
	var out []store.Allowance
	err := s.query(ctx, "allowances", func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT booking_id, actor, created_at, expires_at FROM allowances
			WHERE expires_at IS NULL OR expires_at > $1
			ORDER BY created_at, booking_id`, now)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Allowance, error) {
			var (
				a       store.Allowance
				expires *time.Time
			)
			err := row.Scan(&a.BookingID, &a.Actor, &a.CreatedAt, &expires)
			a.CreatedAt = a.CreatedAt.UTC()
			a.ExpiresAt = fromNull(expires)
			return a, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PurgeExpired implements store.Store.
func (s *Store) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	var total int64
	err := s.inTx(ctx, "purge expired", func(tx pgx.Tx) error {
		for _, q := range []string{
			`DELETE FROM revocations WHERE expires_at <= $1`,
			`DELETE FROM allowances WHERE expires_at <= $1`,
		} {
			tag, err := tx.Exec(ctx, q, now)
			if err != nil {
				return err
			}
			total += tag.RowsAffected()
		}
		return purgeChanges(ctx, tx, now)
	})
	if err != nil {
		return 0, err
	}
	return int(total), nil
}

// AppendAudit implements store.Store.
func (s *Store) AppendAudit(ctx context.Context, evs ...store.AuditEvent) ([]store.AuditEvent, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	out := append([]store.AuditEvent(nil), evs...)
	now := time.Now()
	if err := s.inTx(ctx, "append audit", func(tx pgx.Tx) error { return appendAudit(ctx, tx, out, now) }); err != nil {
		return nil, err
	}
	return out, nil
}

// Audit implements store.Store.
func (s *Store) Audit(ctx context.Context, afterID int64, since time.Time, limit int) ([]store.AuditEvent, error) {
	q := `SELECT id, time, actor, action, target, reason, detail FROM audit WHERE id > $1 ORDER BY id LIMIT $2`
	args := []any{afterID, store.AuditLimit(limit)}
	if !since.IsZero() {
		q = `SELECT id, time, actor, action, target, reason, detail FROM audit WHERE id > $1 AND time >= $3 ORDER BY id LIMIT $2`
		args = append(args, since)
	}
	return s.auditQuery(ctx, q, args...)
}

// auditQuery reads the audit events that q selects (its columns: id,
// time, actor, action, target, reason, detail), in the order it gives.
func (s *Store) auditQuery(ctx context.Context, q string, args ...any) ([]store.AuditEvent, error) {
	var out []store.AuditEvent
	err := s.query(ctx, "audit", func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AuditEvent, error) {
			var ev store.AuditEvent
			err := row.Scan(&ev.ID, &ev.Time, &ev.Actor, &ev.Action, &ev.Target, &ev.Reason, &ev.Detail)
			ev.Time = ev.Time.UTC()
			return ev, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AuditPage implements store.Store.
func (s *Store) AuditPage(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	var (
		where = []string{"TRUE"}
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.BeforeID > 0 {
		where = append(where, "id < "+arg(f.BeforeID))
	}
	if f.AfterID > 0 {
		where = append(where, "id > "+arg(f.AfterID))
	}
	if f.Actor != "" {
		where = append(where, "actor = "+arg(f.Actor))
	}
	if f.Action != "" {
		where = append(where, "action = "+arg(f.Action))
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= "+arg(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, "time < "+arg(f.Until))
	}
	order := "DESC"
	if f.AfterID > 0 {
		order = "ASC" // the page nearest AfterID, reversed below
	}
	q := `SELECT id, time, actor, action, target, reason, detail FROM audit WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY id ` + order + ` LIMIT ` + arg(store.AuditLimit(f.Limit))
	out, err := s.auditQuery(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	if f.AfterID > 0 {
		slices.Reverse(out)
	}
	return out, nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	return s.query(ctx, "ping", func(conn *pgxpool.Conn) error { return conn.Ping(ctx) })
}

// Close implements store.Store. It waits for operations in progress to
// return their connections.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.pool.Close()
	})
	return nil
}
