package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// The lease tests measure expiry on the store's own clock, which the
// suite cannot move (PostgreSQL's now()): a lease meant to outlive a test
// gets an hour, one meant to expire a few milliseconds and a poll.

const leaseHour = time.Hour

func acquire(t *testing.T, s store.Store, name, holder string, ttl time.Duration) (bool, time.Time) {
	t.Helper()
	held, until, err := s.AcquireLease(ctxT(t), name, holder, ttl)
	if err != nil {
		t.Fatalf("AcquireLease(%q, %q, %v): %v", name, holder, ttl, err)
	}
	return held, until
}

func release(t *testing.T, s store.Store, name, holder string) {
	t.Helper()
	if err := s.ReleaseLease(ctxT(t), name, holder); err != nil {
		t.Fatalf("ReleaseLease(%q, %q): %v", name, holder, err)
	}
}

// testLeaseHolders: one holder at a time; the holder renews, others are
// told until when it holds; a release frees it for another at once.
func testLeaseHolders(t *testing.T, s store.Store) {
	before := time.Now()
	held, until := acquire(t, s, "jobs.timers", "a", leaseHour)
	if !held {
		t.Fatal("a free lease was not acquired")
	}
	// The store's clock is not ours, but the same machine's: allow for a
	// slow test, not for an expiry an hour off.
	if until.Before(before.Add(leaseHour-time.Minute)) || until.After(time.Now().Add(leaseHour+time.Minute)) || until.Location() != time.UTC {
		t.Errorf("until = %v, want about an hour after %v, in UTC", until, before)
	}
	if held, other := acquire(t, s, "jobs.timers", "b", leaseHour); held || !other.Equal(until) {
		t.Errorf("another holder: held %v until %v, want false until %v", held, other, until)
	}
	held, renewed := acquire(t, s, "jobs.timers", "a", leaseHour)
	if !held || renewed.Before(until) {
		t.Errorf("renewal: held %v until %v, want true and not before %v", held, renewed, until)
	}
	release(t, s, "jobs.timers", "b") // not b's: nothing happens
	if held, _ := acquire(t, s, "jobs.timers", "b", leaseHour); held {
		t.Error("a release by a non-holder freed the lease")
	}
	release(t, s, "jobs.timers", "a")
	release(t, s, "jobs.timers", "a") // released already: nothing happens
	if held, _ := acquire(t, s, "jobs.timers", "b", leaseHour); !held {
		t.Error("a released lease was not acquired by another holder")
	}
	if held, _ := acquire(t, s, "jobs.timers", "a", leaseHour); held {
		t.Error("the former holder took back a lease another holds")
	}
}

// testLeaseNames: leases of different names are independent.
func testLeaseNames(t *testing.T, s store.Store) {
	if held, _ := acquire(t, s, "x", "a", leaseHour); !held {
		t.Fatal("x not acquired")
	}
	if held, _ := acquire(t, s, "y", "b", leaseHour); !held {
		t.Error("y not acquired while a holds x")
	}
	release(t, s, "y", "a") // a does not hold y
	if held, _ := acquire(t, s, "y", "a", leaseHour); held {
		t.Error("releasing x's holder's nonexistent y freed b's y")
	}
}

// testLeaseExpiry: a lease not renewed within its ttl goes to the next
// holder who asks; the old holder's release then leaves it alone.
func testLeaseExpiry(t *testing.T, s store.Store) {
	if held, _ := acquire(t, s, "jobs.timers", "a", 20*time.Millisecond); !held {
		t.Fatal("a free lease was not acquired")
	}
	wait.For(t, "b to take the lease after a's expired", func() bool {
		held, _ := acquire(t, s, "jobs.timers", "b", leaseHour)
		return held
	})
	release(t, s, "jobs.timers", "a")
	if held, _ := acquire(t, s, "jobs.timers", "a", leaseHour); held {
		t.Error("the expired holder's release freed the new holder's lease")
	}
}

// testLeaseConcurrent: of holders racing for a free lease, one gets it.
func testLeaseConcurrent(t *testing.T, s store.Store) {
	const holders = 8
	for round := range 5 {
		name := "race" + string(rune('0'+round))
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			won  []string
			errs []error
		)
		for i := range holders {
			holder := string(rune('a' + i))
			wg.Go(func() {
				held, _, err := s.AcquireLease(ctxT(t), name, holder, leaseHour)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else if held {
					won = append(won, holder)
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 || len(won) != 1 {
			t.Fatalf("%s: %d holders racing: won by %v, errors %v; want exactly one winner", name, holders, won, errs)
		}
	}
}

// testLeaseValidates: empty names or holders and ttls under the
// expiries' precision are refused, and are not ErrUnavailable.
func testLeaseValidates(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for _, c := range []struct {
		name, holder string
		ttl          time.Duration
	}{{"", "a", time.Second}, {"n", "", time.Second}, {"n", "a", 0}, {"n", "a", -time.Second}, {"n", "a", time.Nanosecond}} {
		if _, _, err := s.AcquireLease(ctx, c.name, c.holder, c.ttl); err == nil || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("AcquireLease(%q, %q, %v) = %v, want an error (not ErrUnavailable)", c.name, c.holder, c.ttl, err)
		}
	}
	for _, c := range [][2]string{{"", "a"}, {"n", ""}} {
		if err := s.ReleaseLease(ctx, c[0], c[1]); err == nil || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("ReleaseLease(%q, %q) = %v, want an error (not ErrUnavailable)", c[0], c[1], err)
		}
	}
}
