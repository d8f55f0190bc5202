package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// The sessions table is described in migrations/*_sessions.sql: a
// session is found by the SHA-256 of its id (store.SessionIDHash). Every
// method is one statement, run outside an explicit transaction: a
// dashboard request costs one round trip.

var _ store.SessionStore = (*Store)(nil)

// CreateSession implements store.SessionStore.
func (s *Store) CreateSession(ctx context.Context, id string, ss store.Session) error {
	if err := store.ValidateSession(id, ss); err != nil {
		return err
	}
	return s.query(ctx, "create session", func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO sessions (id_hash, subject, name, email, provider, role, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, store.SessionIDHash(id), ss.Subject, ss.Name, ss.Email, ss.Provider, ss.Role,
			utc(orNow(ss.CreatedAt, time.Now())), utc(ss.ExpiresAt))
		return err
	})
}

// Session implements store.SessionStore.
func (s *Store) Session(ctx context.Context, id string, now time.Time) (store.Session, bool, error) {
	var (
		ss    store.Session
		found bool
	)
	err := s.query(ctx, "session", func(conn *pgxpool.Conn) error {
		err := conn.QueryRow(ctx, `SELECT subject, name, email, provider, role, created_at, expires_at FROM sessions
			WHERE id_hash = $1 AND expires_at > $2`, store.SessionIDHash(id), now).
			Scan(&ss.Subject, &ss.Name, &ss.Email, &ss.Provider, &ss.Role, &ss.CreatedAt, &ss.ExpiresAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil || !found {
		return store.Session{}, false, err
	}
	ss.CreatedAt, ss.ExpiresAt = ss.CreatedAt.UTC(), ss.ExpiresAt.UTC()
	return ss, true, nil
}

// DeleteSession implements store.SessionStore.
func (s *Store) DeleteSession(ctx context.Context, id string) (bool, error) {
	n, err := s.deleteSessions(ctx, "delete session", `DELETE FROM sessions WHERE id_hash = $1`, store.SessionIDHash(id))
	return n > 0, err
}

// DeleteSubjectSessions implements store.SessionStore.
func (s *Store) DeleteSubjectSessions(ctx context.Context, subject string) (int, error) {
	return s.deleteSessions(ctx, "delete subject sessions", `DELETE FROM sessions WHERE subject = $1`, subject)
}

// PurgeExpiredSessions implements store.SessionStore.
func (s *Store) PurgeExpiredSessions(ctx context.Context, now time.Time) (int, error) {
	return s.deleteSessions(ctx, "purge expired sessions", `DELETE FROM sessions WHERE expires_at <= $1`, now)
}

// deleteSessions runs one DELETE and reports how many rows it removed.
func (s *Store) deleteSessions(ctx context.Context, op, query string, arg any) (int, error) {
	var n int64
	err := s.query(ctx, op, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, query, arg)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}
