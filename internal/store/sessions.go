package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"
)

// Session is a dashboard login as the store keeps it (package web owns
// its meaning). The session's id is not part of it: the store keeps only
// the id's SHA-256 (SessionIDHash), so a copy of the database opens no
// session, and a stored session can be found by its id but its id cannot
// be read back.
type Session struct {
	Subject   string // stable user id, e.g. "oidc:<sub>"; never empty
	Name      string // for display
	Email     string
	Provider  string    // "oidc", "github" or "link"
	Role      string    // "viewer", "operator" or "admin"
	CreatedAt time.Time // zero: the store uses the current time
	ExpiresAt time.Time // never zero: sessions always end
}

// SessionStore keeps dashboard sessions, so that every node sharing the
// database knows every node's sessions and a restart keeps them. Part of
// Store.
//
// Expiry is decided by the now the caller passes (the node's clock);
// sessions do not slide: ExpiresAt is fixed at creation. Session never
// returns an expired session, whether or not it has been purged yet.
type SessionStore interface {
	// CreateSession stores s under id. id must not be empty, s.Subject
	// must not be empty and s.ExpiresAt must be set (ValidateSession). An
	// id already stored is an error and changes nothing (ids are random:
	// it does not happen by chance).
	CreateSession(ctx context.Context, id string, s Session) error
	// Session returns the session stored under id if it has not expired
	// at now (ExpiresAt after now); found is false otherwise.
	Session(ctx context.Context, id string, now time.Time) (s Session, found bool, err error)
	// DeleteSession removes the session stored under id and reports
	// whether there was one. Deleting it again is not an error.
	DeleteSession(ctx context.Context, id string) (bool, error)
	// DeleteSubjectSessions removes every session of subject, expired or
	// not, and reports how many there were: 0 when another node has
	// already removed them.
	DeleteSubjectSessions(ctx context.Context, subject string) (int, error)
	// PurgeExpiredSessions removes the sessions that have expired at now
	// (those Session no longer returns) and reports how many.
	PurgeExpiredSessions(ctx context.Context, now time.Time) (int, error)
}

// SessionIDHash is what the store keeps of a session id: its SHA-256. A
// session id is 128 random bits, so an unsalted fast hash is enough: the
// hash cannot be reversed and cannot be guessed from.
func SessionIDHash(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}

// ValidateSession reports whether CreateSession may store s under id.
func ValidateSession(id string, s Session) error {
	switch {
	case id == "":
		return errors.New("store: session id is empty")
	case s.Subject == "":
		return errors.New("store: session subject is empty")
	case s.ExpiresAt.IsZero():
		return errors.New("store: session has no expiry")
	}
	return nil
}
