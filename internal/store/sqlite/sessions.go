package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// The sessions table is described in migrations/*_sessions.sql: a
// session is found by the SHA-256 of its id (store.SessionIDHash).

var _ store.SessionStore = (*Store)(nil)

// CreateSession implements store.SessionStore.
func (s *Store) CreateSession(ctx context.Context, id string, ss store.Session) error {
	if err := store.ValidateSession(id, ss); err != nil {
		return err
	}
	return s.inTx(ctx, "create session", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions (id_hash, subject, name, email, provider, role, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, store.SessionIDHash(id), ss.Subject, ss.Name, ss.Email, ss.Provider, ss.Role,
			micros(orNow(ss.CreatedAt, s.now())), micros(ss.ExpiresAt))
		return err
	})
}

// Session implements store.SessionStore.
func (s *Store) Session(ctx context.Context, id string, now time.Time) (store.Session, bool, error) {
	if s.closed.Load() {
		return store.Session{}, false, fmt.Errorf("sqlite: session: %w", errClosed)
	}
	var (
		ss               store.Session
		created, expires int64
	)
	err := s.read.QueryRowContext(ctx, `SELECT subject, name, email, provider, role, created_at, expires_at FROM sessions
		WHERE id_hash = ? AND expires_at > ?`, store.SessionIDHash(id), micros(now)).
		Scan(&ss.Subject, &ss.Name, &ss.Email, &ss.Provider, &ss.Role, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Session{}, false, nil
	}
	if err != nil {
		return store.Session{}, false, s.wrap("session", err)
	}
	ss.CreatedAt, ss.ExpiresAt = fromMicros(created), fromMicros(expires)
	return ss, true, nil
}

// DeleteSession implements store.SessionStore.
func (s *Store) DeleteSession(ctx context.Context, id string) (bool, error) {
	n, err := s.deleteSessions(ctx, "delete session", `DELETE FROM sessions WHERE id_hash = ?`, store.SessionIDHash(id))
	return n > 0, err
}

// DeleteSubjectSessions implements store.SessionStore.
func (s *Store) DeleteSubjectSessions(ctx context.Context, subject string) (int, error) {
	return s.deleteSessions(ctx, "delete subject sessions", `DELETE FROM sessions WHERE subject = ?`, subject)
}

// PurgeExpiredSessions implements store.SessionStore.
func (s *Store) PurgeExpiredSessions(ctx context.Context, now time.Time) (int, error) {
	return s.deleteSessions(ctx, "purge expired sessions", `DELETE FROM sessions WHERE expires_at <= ?`, micros(now))
}

// deleteSessions runs one DELETE and reports how many rows it removed.
func (s *Store) deleteSessions(ctx context.Context, op, query string, arg any) (int, error) {
	var n int64
	err := s.inTx(ctx, op, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, arg)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}
