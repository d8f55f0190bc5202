// Package sqlite is the embedded store backend: one SQLite file (by default
// <data-dir>/switchboard.db) opened with the pure-Go driver modernc.org/sqlite,
// in WAL mode, with its schema migrated at open from embedded SQL files.
//
// Writes go through a pool of exactly one connection, so they are serialised
// in the process and never fight each other for SQLite's single write lock;
// reads use a separate pool of read-only connections, which WAL lets run
// alongside the writer.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/switchboard-hub/switchboard/internal/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// FileName is the name of the database file in the data directory.
const FileName = "switchboard.db"

// Options tune Open. The zero value is ready to use.
type Options struct {
	// BusyTimeout is how long a statement waits for a lock held by another
	// process (e.g. a second switchboard on the same file) before failing
	// with an error wrapping store.ErrUnavailable. Zero means 5s.
	BusyTimeout time.Duration
	// ReadConns is the size of the read-only connection pool. Zero means
	// max(4, GOMAXPROCS).
	ReadConns int
	// Logger receives migration messages. Nil discards them.
	Logger *slog.Logger
	// Now is the clock of leases (store.LeaseStore); nil means time.Now.
	// Tests use it to move time.
	Now func() time.Time
}

// Store is a store.Store on a SQLite file. It is safe for concurrent use.
type Store struct {
	path  string
	write *sql.DB          // exactly one connection: the single writer
	read  *sql.DB          // query_only connections
	now   func() time.Time // the clock of leases: Options.Now

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the SQLite database at path, normally
// filepath.Join(dataDir, FileName), and migrates its schema to the newest
// embedded version. The directory must exist. If the database was migrated
// by a newer Switchboard, Open fails with an error wrapping
// store.ErrSchemaTooNew.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 5 * time.Second
	}
	readConns := opts.ReadConns
	if readConns <= 0 {
		readConns = max(4, runtime.GOMAXPROCS(0))
	}

	// Durability: in WAL mode with synchronous=NORMAL a commit is appended
	// to the WAL file with write(2) before it is acknowledged, but not
	// fsynced (the WAL is fsynced at checkpoints). A committed transaction
	// therefore survives the process being killed, which is the durability
	// the store promises; only an OS crash or power loss may lose the most
	// recent commits (never corrupting the database). synchronous=FULL
	// would fsync every commit at a large cost in write throughput.
	common := url.Values{}
	common.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	common.Add("_pragma", "foreign_keys(1)")
	common.Add("_pragma", "synchronous(NORMAL)")

	w := cloneValues(common)
	w.Add("_pragma", "journal_mode(WAL)")
	// BEGIN IMMEDIATE takes the write lock at the start of a transaction,
	// so a concurrent writer in another process makes us wait (busy
	// timeout) instead of failing at the first write with SQLITE_BUSY.
	w.Set("_txlock", "immediate")

	r := cloneValues(common)
	r.Add("_pragma", "query_only(1)")

	// The database holds revocations, audit events and dashboard sessions:
	// create it readable by its owner only, whatever the directory's mode
	// (SQLite gives the -wal and -shm files the database file's mode).
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	s := &Store{path: path, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	if s.write, err = sql.Open("sqlite", dsn(path, w)); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxLifetime(0)
	s.write.SetConnMaxIdleTime(0)

	// The writer connects first: it switches the file to WAL mode (a
	// persistent setting) before any reader opens it.
	if err := s.write.PingContext(ctx); err != nil {
		s.write.Close()
		return nil, s.wrap("open "+path, err)
	}
	if s.read, err = sql.Open("sqlite", dsn(path, r)); err != nil {
		s.write.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.read.SetMaxOpenConns(readConns)
	s.read.SetMaxIdleConns(readConns)
	s.read.SetConnMaxIdleTime(0)

	if err := s.migrate(ctx, opts.Logger); err != nil {
		s.write.Close()
		s.read.Close()
		return nil, err
	}
	return s, nil
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// dsn builds a "file:" URI, so that any character in path is escaped
// rather than read as the start of the query string.
func dsn(path string, q url.Values) string {
	u := url.URL{Scheme: "file", Opaque: (&url.URL{Path: path}).EscapedPath(), RawQuery: q.Encode()}
	return u.String()
}

func (s *Store) migrate(ctx context.Context, logger *slog.Logger) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	} else {
		opts = append(opts, goose.WithLogger(goose.NopLogger()))
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, s.write, fsys, opts...)
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	current, target, err := p.GetVersions(ctx)
	if err != nil {
		return s.wrap("read schema version of "+s.path, err)
	}
	if current > target {
		return fmt.Errorf("sqlite: %s: %w: the database is at schema version %d, this binary knows versions up to %d; upgrade the switchboard binary",
			s.path, store.ErrSchemaTooNew, current, target)
	}
	if _, err := p.Up(ctx); err != nil {
		return s.wrap("migrate "+s.path, err)
	}
	return nil
}

var errClosed = fmt.Errorf("sqlite: %w: store is closed", store.ErrUnavailable)

// wrap prefixes err with the operation and marks it with
// store.ErrUnavailable when the database could not do the work for reasons
// that may pass: locked by another process, I/O errors, disk full.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() {
		return fmt.Errorf("sqlite: %s: %w: %w", op, errClosed, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
			sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL:
			return fmt.Errorf("sqlite: %s: %w: %w", op, store.ErrUnavailable, err)
		}
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

func micros(t time.Time) int64 { return t.UnixMicro() }

// nullMicros stores the zero time ("never") as NULL.
func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

func orNow(t time.Time, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}

// inTx runs fn in a write transaction on the single writer connection and
// commits it; any error rolls everything back.
func (s *Store) inTx(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	if s.closed.Load() {
		return fmt.Errorf("sqlite: %s: %w", op, errClosed)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(op, err)
	}
	// Rolls back if fn panics (UpdateJob runs the caller's function), so
	// the single writer connection is never left in a transaction; after
	// Commit it does nothing.
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return s.wrap(op, err)
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(op, err)
	}
	return nil
}

const insertAudit = `INSERT INTO audit (time, actor, action, target, reason, detail) VALUES (?, ?, ?, ?, ?, ?)`

func appendAudit(ctx context.Context, tx *sql.Tx, ev *store.AuditEvent, now time.Time) error {
	ev.Time = orNow(ev.Time, now).UTC().Truncate(time.Microsecond)
	res, err := tx.ExecContext(ctx, insertAudit, micros(ev.Time), ev.Actor, ev.Action, ev.Target, ev.Reason, ev.Detail)
	if err != nil {
		return err
	}
	ev.ID, err = res.LastInsertId()
	return err
}

// Revoke implements store.Store.
func (s *Store) Revoke(ctx context.Context, r store.Revocation, ev store.AuditEvent) (int64, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	now := time.Now()
	var revision int64
	err := s.inTx(ctx, "revoke", func(tx *sql.Tx) error {
		var created int64
		err := tx.QueryRowContext(ctx, `INSERT INTO revocations (kind, value, reason, actor, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (kind, value) DO UPDATE SET reason = excluded.reason, actor = excluded.actor, expires_at = excluded.expires_at
			RETURNING created_at`,
			string(r.Kind), r.Value, r.Reason, r.Actor, micros(orNow(r.CreatedAt, now)), nullMicros(r.ExpiresAt)).Scan(&created)
		if err != nil {
			return err
		}
		if r.Kind == store.RevokeBooking {
			if _, err := tx.ExecContext(ctx, `DELETE FROM allowances WHERE booking_id = ?`, r.Value); err != nil {
				return err
			}
		}
		stored := r
		stored.CreatedAt = fromMicros(created)
		if revision, err = recordChange(ctx, tx, store.OpRevoke, stored, nil, r.ExpiresAt); err != nil {
			return err
		}
		return appendAudit(ctx, tx, &ev, now)
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
			return false, 0, fmt.Errorf("sqlite: unrevoke: an allowance needs kind %q, not %q", store.RevokeBooking, kind)
		}
		if allow.BookingID != "" && allow.BookingID != value {
			return false, 0, fmt.Errorf("sqlite: unrevoke: allowance for booking %q does not match %q", allow.BookingID, value)
		}
	}
	now := time.Now()
	var (
		removed  bool
		revision int64
	)
	err := s.inTx(ctx, "unrevoke", func(tx *sql.Tx) error {
		var removedExpiry sql.NullInt64
		err := tx.QueryRowContext(ctx, `DELETE FROM revocations WHERE kind = ? AND value = ? RETURNING expires_at`, string(kind), value).Scan(&removedExpiry)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			removed = true
		}
		var stored *store.Allowance
		if allow != nil {
			stored = &store.Allowance{BookingID: value, Actor: allow.Actor,
				CreatedAt: fromMicros(micros(orNow(allow.CreatedAt, now))), ExpiresAt: allow.ExpiresAt}
			_, err := tx.ExecContext(ctx, `INSERT INTO allowances (booking_id, actor, created_at, expires_at) VALUES (?, ?, ?, ?)
				ON CONFLICT (booking_id) DO UPDATE SET actor = excluded.actor, created_at = excluded.created_at, expires_at = excluded.expires_at`,
				value, stored.Actor, micros(stored.CreatedAt), nullMicros(stored.ExpiresAt))
			if err != nil {
				return err
			}
		}
		change := store.Revocation{Kind: kind, Value: value, Actor: ev.Actor, CreatedAt: orNow(ev.Time, now)}
		keep := store.ChangeKeepUntil(removed, fromNullMicros(removedExpiry), stored, now)
		if revision, err = recordChange(ctx, tx, store.OpUnrevoke, change, stored, keep); err != nil {
			return err
		}
		return appendAudit(ctx, tx, &ev, now)
	})
	if err != nil {
		return false, 0, err
	}
	return removed, revision, nil
}

// Revocations implements store.Store.
func (s *Store) Revocations(ctx context.Context, kind store.RevocationKind, now time.Time) ([]store.Revocation, error) {
	if kind != "" && !kind.Valid() {
		return nil, fmt.Errorf("sqlite: revocations: unknown kind %q", kind)
	}
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: revocations: %w", errClosed)
	}
	rows, err := s.read.QueryContext(ctx, `SELECT kind, value, reason, actor, created_at, expires_at FROM revocations
		WHERE (?1 = '' OR kind = ?1) AND (expires_at IS NULL OR expires_at > ?2)
		ORDER BY created_at, kind, value`, string(kind), micros(now))
	if err != nil {
		return nil, s.wrap("revocations", err)
	}
	defer rows.Close()
	var out []store.Revocation
	for rows.Next() {
		var (
			r       store.Revocation
			kind    string
			created int64
			expires sql.NullInt64
		)
		if err := rows.Scan(&kind, &r.Value, &r.Reason, &r.Actor, &created, &expires); err != nil {
			return nil, s.wrap("revocations", err)
		}
		r.Kind = store.RevocationKind(kind)
		r.CreatedAt = fromMicros(created)
		r.ExpiresAt = fromNullMicros(expires)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("revocations", err)
	}
	return out, nil
}

// Allowances implements store.Store.
func (s *Store) Allowances(ctx context.Context, now time.Time) ([]store.Allowance, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: allowances: %w", errClosed)
	}
	rows, err := s.read.QueryContext(ctx, `SELECT booking_id, actor, created_at, expires_at FROM allowances
		WHERE expires_at IS NULL OR expires_at > ?
		ORDER BY created_at, booking_id`, micros(now))
	if err != nil {
		return nil, s.wrap("allowances", err)
	}
	defer rows.Close()
	var out []store.Allowance
	for rows.Next() {
		var (
			a       store.Allowance
			created int64
			expires sql.NullInt64
		)
		if err := rows.Scan(&a.BookingID, &a.Actor, &created, &expires); err != nil {
			return nil, s.wrap("allowances", err)
		}
		a.CreatedAt = fromMicros(created)
		a.ExpiresAt = fromNullMicros(expires)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("allowances", err)
	}
	return out, nil
}

// PurgeExpired implements store.Store.
func (s *Store) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	var total int64
	err := s.inTx(ctx, "purge expired", func(tx *sql.Tx) error {
		for _, q := range []string{
			`DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at <= ?`,
			`DELETE FROM allowances WHERE expires_at IS NOT NULL AND expires_at <= ?`,
		} {
			res, err := tx.ExecContext(ctx, q, micros(now))
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			total += n
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
	err := s.inTx(ctx, "append audit", func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, insertAudit)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i := range out {
			ev := &out[i]
			ev.Time = orNow(ev.Time, now).UTC().Truncate(time.Microsecond)
			res, err := stmt.ExecContext(ctx, micros(ev.Time), ev.Actor, ev.Action, ev.Target, ev.Reason, ev.Detail)
			if err != nil {
				return err
			}
			if ev.ID, err = res.LastInsertId(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Audit implements store.Store.
func (s *Store) Audit(ctx context.Context, afterID int64, since time.Time, limit int) ([]store.AuditEvent, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: audit: %w", errClosed)
	}
	var sinceMicros int64 = -1 << 63
	if !since.IsZero() {
		sinceMicros = micros(since)
	}
	return s.auditQuery(ctx, `WHERE id > ? AND time >= ? ORDER BY id LIMIT ?`, afterID, sinceMicros, store.AuditLimit(limit))
}

// auditQuery reads the audit events that "SELECT … FROM audit " + tail
// selects, in the order it gives.
func (s *Store) auditQuery(ctx context.Context, tail string, args ...any) ([]store.AuditEvent, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT id, time, actor, action, target, reason, detail FROM audit
		`+tail, args...)
	if err != nil {
		return nil, s.wrap("audit", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var (
			ev store.AuditEvent
			t  int64
		)
		if err := rows.Scan(&ev.ID, &t, &ev.Actor, &ev.Action, &ev.Target, &ev.Reason, &ev.Detail); err != nil {
			return nil, s.wrap("audit", err)
		}
		ev.Time = fromMicros(t)
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("audit", err)
	}
	return out, nil
}

// AuditPage implements store.Store.
func (s *Store) AuditPage(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: audit: %w", errClosed)
	}
	c := conditions{where: []string{"1 = 1"}}
	if f.BeforeID > 0 {
		c.add("id < ?", f.BeforeID)
	}
	if f.AfterID > 0 {
		c.add("id > ?", f.AfterID)
	}
	if f.Actor != "" {
		c.add("actor = ?", f.Actor)
	}
	if f.Action != "" {
		c.add("action = ?", f.Action)
	}
	if !f.Since.IsZero() {
		c.add("time >= ?", micros(f.Since))
	}
	if !f.Until.IsZero() {
		c.add("time < ?", micros(f.Until))
	}
	order := "DESC"
	if f.AfterID > 0 {
		order = "ASC" // the page nearest AfterID, reversed below
	}
	c.args = append(c.args, store.AuditLimit(f.Limit))
	out, err := s.auditQuery(ctx, `WHERE `+c.String()+` ORDER BY id `+order+` LIMIT ?`, c.args...)
	if err != nil {
		return nil, err
	}
	if f.AfterID > 0 {
		slices.Reverse(out)
	}
	return out, nil
}

// Ping implements store.Store: it runs a read transaction on the file.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("sqlite: ping: %w", errClosed)
	}
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema`).Scan(&n); err != nil {
		return s.wrap("ping", err)
	}
	return nil
}

// Close implements store.Store. It waits for operations in progress.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = errors.Join(s.read.Close(), s.write.Close())
	})
	return s.closeErr
}

// createPrivate creates the database file with mode 0600 if it does not
// exist yet; an existing file keeps the mode its owner gave it.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: create %s: %w", path, err)
	}
	return f.Close()
}
