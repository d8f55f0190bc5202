package store

import (
	"context"
	"time"
)

// Revisions of revocation changes (DESIGN.md §5, §6). Every Revoke and
// Unrevoke takes the next revision (1, 2, …) in the transaction that makes
// the change, and records the change under it in a change log, so that a
// node that missed the bus event of a change finds it by asking for the
// changes after the last revision it applied.
//
// Revisions are taken in commit order: a writer holds the revision counter
// from taking a number until it commits (a row lock in PostgreSQL, the
// single writer in SQLite). A reader that has seen revision n has therefore
// seen every change numbered below n; it never skips one that commits late
// with a smaller number (which a plain sequence would allow).
//
// The log keeps, for each (kind, value), only the changes a node that has
// not applied them still needs: a change replaces the earlier ones of its
// value (a changed revocation or a removal overrides them), except that an
// unrevoke without an allowance keeps the last allowance recorded. A change
// is kept as long as it can matter to such a node: until the latest expiry
// of the revocations and the allowance it removed, recorded or replaced (a
// node may still hold any of them). PurgeExpired deletes the rest; the
// in-memory sets drop expired entries on their own.

// RevocationOp is what a RevocationChange did.
type RevocationOp string

// The operations of the change log.
const (
	OpRevoke   RevocationOp = "revoke"   // Revoke: the revocation was added or replaced
	OpUnrevoke RevocationOp = "unrevoke" // Unrevoke: the revocation was removed (if present)
)

// RevocationChange is one recorded Revoke or Unrevoke.
type RevocationChange struct {
	Revision int64
	Op       RevocationOp
	// Revocation is, for OpRevoke, the revocation as stored after the
	// change (CreatedAt is the first revoke's); for OpUnrevoke, Kind and
	// Value name what was removed, and Actor and CreatedAt are the
	// allowance's if Allow is set, else the audit event's actor and time.
	Revocation Revocation
	// Allow is, for an OpUnrevoke that recorded an allowance, the
	// allowance as stored (BookingID set); nil otherwise.
	Allow *Allowance
}

// RevocationChanges is one page of the change log.
type RevocationChanges struct {
	// Changes are in revision order.
	Changes []RevocationChange
	// Revision is what a reader that applied Changes has caught up to: the
	// store's current revision, or, when More, the last change's.
	Revision int64
	// More: the page was full; ask again after Revision.
	More bool
}

// Page sizes of RevocationChanges: limit <= 0 means
// DefaultRevocationChanges, and it is capped at MaxRevocationChanges.
const (
	DefaultRevocationChanges = 500
	MaxRevocationChanges     = 5000
)

// RevocationChangesLimit returns the page size RevocationChanges uses for
// limit.
func RevocationChangesLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultRevocationChanges
	case limit > MaxRevocationChanges:
		return MaxRevocationChanges
	}
	return limit
}

// RevocationLog is the revision side of the revocations; part of Store.
type RevocationLog interface {
	// RevocationRevision returns the revision of the last recorded change
	// (0 if none): one small read, for a poll that usually finds nothing
	// new.
	RevocationRevision(ctx context.Context) (int64, error)
	// RevocationChanges returns up to limit changes with a revision after
	// after, read in one snapshot with the current revision. See
	// RevocationChangesLimit for how limit is read.
	RevocationChanges(ctx context.Context, after int64, limit int) (RevocationChanges, error)
}

// ChangeKeepUntil is how long the change log keeps an unrevoke: until the
// later of the removed revocation's expiry (removed false: nothing to keep
// for) and the allowance's (nil: none); zero means forever, and now means
// it may go at the next purge.
func ChangeKeepUntil(removed bool, removedExpiry time.Time, allow *Allowance, now time.Time) time.Time {
	keep := now
	never := false
	for _, c := range []struct {
		present bool
		expiry  time.Time
	}{{removed, removedExpiry}, {allow != nil, allowExpiry(allow)}} {
		switch {
		case !c.present:
		case c.expiry.IsZero():
			never = true
		case c.expiry.After(keep):
			keep = c.expiry
		}
	}
	if never {
		return time.Time{}
	}
	return keep
}

func allowExpiry(a *Allowance) time.Time {
	if a == nil {
		return time.Time{}
	}
	return a.ExpiresAt
}

// KeepsAllowance reports whether a change (op, allow) leaves the earlier
// allowance change of its value in the log: an unrevoke that records no
// allowance leaves the allowance as it was.
func KeepsAllowance(op RevocationOp, allow *Allowance) bool {
	return op == OpUnrevoke && allow == nil
}

// LaterKeep returns the later of two keep-until times, zero meaning
// forever.
func LaterKeep(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if b.After(a) {
		return b
	}
	return a
}
