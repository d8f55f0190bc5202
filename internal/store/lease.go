package store

import (
	"context"
	"errors"
	"time"
)

// LeaseStore keeps named leases: a lease is held by one holder at a time,
// until it expires, so that of the nodes sharing a database exactly one
// does a piece of work (the job timers hold "jobs.timers"). Part of
// JobStore.
//
// Time: a lease's expiry is measured on the database's clock — PostgreSQL's
// now() (one clock for every node, whatever their own clocks say), and for
// SQLite, which one process uses at a time, that process's clock
// (sqlite.Options.Now, time.Now by default). Expiries are kept with
// microsecond precision. The until a method returns is on that clock: a
// holder must not compare it with its own clock, but count its lease as
// lasting ttl from the moment it sent the AcquireLease that returned it
// (which is never later than the database's).
type LeaseStore interface {
	// AcquireLease takes the lease name for holder until ttl from now, if
	// it is free, has expired or is holder's already (a renewal: the
	// expiry moves to ttl from now). It reports held true and the new
	// expiry; otherwise held false and the current holder's expiry (zero
	// if it was released meanwhile). Concurrent calls for one name from
	// different holders give it to at most one of them. name and holder
	// must not be empty and ttl must be at least a microsecond.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (held bool, until time.Time, err error)
	// ReleaseLease gives the lease up if holder holds it (expired or not),
	// so that another holder may take it at once; otherwise it does
	// nothing.
	ReleaseLease(ctx context.Context, name, holder string) error
}

// ValidateLease reports whether a lease call may name name and holder:
// neither may be empty.
func ValidateLease(name, holder string) error {
	switch {
	case name == "":
		return errors.New("store: lease name is empty")
	case holder == "":
		return errors.New("store: lease holder is empty")
	}
	return nil
}

// ValidateLeaseTTL reports whether AcquireLease may be called with ttl: at
// least a microsecond, the precision of expiries.
func ValidateLeaseTTL(ttl time.Duration) error {
	if ttl < time.Microsecond {
		return errors.New("store: lease ttl is shorter than a microsecond")
	}
	return nil
}
