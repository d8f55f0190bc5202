// Package store defines what Switchboard keeps in its database and the
// interface both backends implement: SQLite (package store/sqlite, the
// embedded default) and PostgreSQL (package store/postgres, for clusters).
// Package store/storetest is the conformance suite both must pass,
// store/pgtest gives tests a PostgreSQL database, and store/storeload
// measures write throughput.
//
// Contract for every method: a nil error means the change is durable (it
// survives the server process being killed); an error means nothing was
// changed, with one unavoidable exception: if the connection to a database
// server is lost while a commit is in flight, the outcome is unknown (the
// error then wraps ErrUnavailable). Errors caused by the database being
// unreachable wrap ErrUnavailable, so callers can answer 503. A closed store
// returns errors wrapping ErrUnavailable too.
//
// Times are stored in UTC with microsecond precision (finer parts are
// truncated) and returned as UTC. A zero ExpiresAt means "never expires".
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors returned by stores.
var (
	// ErrUnavailable wraps errors caused by the database being unreachable
	// or failing; the operation may succeed later.
	ErrUnavailable = errors.New("store: database unavailable")
	// ErrSchemaTooNew: the database was migrated by a newer Switchboard.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this binary")
)

// Audit page sizes: Audit treats limit <= 0 as DefaultAuditLimit and caps
// it at MaxAuditLimit.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// AuditFilter selects a page of the audit log read newest first. Without
// AfterID the page is the Limit newest events that match (below BeforeID
// when set: the next, older page); with AfterID it is the Limit oldest
// events above AfterID that match (the previous, newer page). Either way
// the events come newest first.
type AuditFilter struct {
	BeforeID int64     // > 0: only events with ID < BeforeID
	AfterID  int64     // > 0: only events with ID > AfterID, the page nearest to it
	Actor    string    // "": any; else exactly this actor
	Action   string    // "": any; else exactly this action
	Since    time.Time // zero: no bound; else Time >= Since
	Until    time.Time // zero: no bound; else Time < Until
	Limit    int       // the page size, read as AuditLimit reads it
}

// AuditLimit returns the page size Audit uses for limit.
func AuditLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultAuditLimit
	case limit > MaxAuditLimit:
		return MaxAuditLimit
	}
	return limit
}

// RevocationKind says what a revocation matches.
type RevocationKind string

// Revocation kinds.
const (
	RevokeBooking RevocationKind = "booking" // tokens with this booking_id
	RevokeSubject RevocationKind = "subject" // tokens with this sub
	RevokeToken   RevocationKind = "token"   // the token with this jti
)

// Valid reports whether k is a known kind.
func (k RevocationKind) Valid() bool {
	return k == RevokeBooking || k == RevokeSubject || k == RevokeToken
}

// Revocation denies every token matching Kind and Value until ExpiresAt,
// after which it may be forgotten.
type Revocation struct {
	Kind      RevocationKind
	Value     string
	Reason    string
	Actor     string    // sub of who revoked
	CreatedAt time.Time // zero: the store uses the current time
	ExpiresAt time.Time // zero: never expires
}

// Validate reports whether r can be stored: a known Kind and a non-empty
// Value.
func (r Revocation) Validate() error {
	if !r.Kind.Valid() {
		return fmt.Errorf("store: unknown revocation kind %q", r.Kind)
	}
	if r.Value == "" {
		return errors.New("store: revocation value is empty")
	}
	return nil
}

// Allowance records that a booking was explicitly allowed again (practable's
// allow list): it is listed until ExpiresAt.
type Allowance struct {
	BookingID string // "" in Unrevoke: the unrevoked value
	Actor     string
	CreatedAt time.Time // zero: the store uses the current time
	ExpiresAt time.Time // zero: never expires
}

// AuditEvent is one entry of the audit log.
type AuditEvent struct {
	ID     int64     // assigned by the store, increasing in commit order
	Time   time.Time // zero: the store uses the current time
	Actor  string    // sub of who acted
	Action string    // e.g. "deny", "allow", "revoke", "unrevoke", "token.mint", "token.refresh"
	Target string    // what was acted on, e.g. "booking:b42"
	Reason string
	Detail string // JSON object with further details, or ""
}

// Store is the database: revocations, allowances and the audit log,
// (JobStore) jobs, their runs and the agents seen, and (SessionStore) the
// dashboard's sessions.
type Store interface {
	JobStore
	RevocationLog
	SessionStore

	// Revoke adds or replaces the revocation (Kind, Value), removes any
	// allowance of the same booking, appends ev to the audit log and
	// records the change under the next revision (RevocationLog), in one
	// transaction, and returns that revision. Revoking again is not an
	// error: it updates reason, actor and expiry, and keeps the first
	// CreatedAt.
	Revoke(ctx context.Context, r Revocation, ev AuditEvent) (revision int64, err error)
	// Unrevoke removes the revocation (kind, value), records allow (for
	// bookings, if allow is non-nil; allow must be nil for other kinds)
	// appends ev and records the change under the next revision, in one
	// transaction. It reports whether a revocation was removed (ev is
	// appended and the change recorded either way) and the revision.
	Unrevoke(ctx context.Context, kind RevocationKind, value string, allow *Allowance, ev AuditEvent) (removed bool, revision int64, err error)
	// Revocations lists revocations of kind ("" for all) that have not
	// expired at now (ExpiresAt zero or after now), oldest CreatedAt first.
	Revocations(ctx context.Context, kind RevocationKind, now time.Time) ([]Revocation, error)
	// Allowances lists allowances that have not expired at now, oldest
	// CreatedAt first.
	Allowances(ctx context.Context, now time.Time) ([]Allowance, error)
	// PurgeExpired deletes the revocations and allowances that have expired
	// at now (those the listings above leave out) and reports how many; it
	// also deletes the changes the change log no longer needs to keep
	// (RevocationLog), which it does not count.
	PurgeExpired(ctx context.Context, now time.Time) (int, error)

	// AppendAudit appends events to the audit log in one transaction and
	// returns them with their ids. Ids are strictly increasing in commit
	// order, so a reader paging with afterID never skips an event.
	AppendAudit(ctx context.Context, evs ...AuditEvent) ([]AuditEvent, error)
	// Audit lists up to limit events with ID > afterID and Time >= since,
	// in id order. See AuditLimit for how limit is read.
	Audit(ctx context.Context, afterID int64, since time.Time, limit int) ([]AuditEvent, error)
	// AuditPage lists one page of the audit log read newest first, as f
	// selects it (see AuditFilter), newest first.
	AuditPage(ctx context.Context, f AuditFilter) ([]AuditEvent, error)

	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close releases the database. Calling it again does nothing.
	Close() error
}
