package sqlite

import (
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestLeaseExpiresOnTheStoresClock: a lease is the holder's until exactly
// ttl after its last acquisition on Options.Now, and free from then on.
func TestLeaseExpiresOnTheStoresClock(t *testing.T) {
	clock := &fakeClock{now: time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)}
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), FileName), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	acquire := func(holder string) (bool, time.Time) {
		t.Helper()
		held, until, err := s.AcquireLease(ctx, "jobs.timers", holder, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return held, until
	}
	start := clock.Now()
	if held, until := acquire("a"); !held || !until.Equal(start.Add(10*time.Second)) {
		t.Fatalf("a: held %v until %v, want true until %v", held, until, start.Add(10*time.Second))
	}
	clock.Add(6 * time.Second)
	if held, until := acquire("a"); !held || !until.Equal(start.Add(16*time.Second)) {
		t.Fatalf("a renews: held %v until %v, want true until %v", held, until, start.Add(16*time.Second))
	}
	clock.Add(10*time.Second - time.Microsecond) // 1 µs before the renewed expiry
	if held, until := acquire("b"); held || !until.Equal(start.Add(16*time.Second)) {
		t.Fatalf("b before expiry: held %v until %v, want false until %v", held, until, start.Add(16*time.Second))
	}
	clock.Add(time.Microsecond) // at the expiry
	if held, until := acquire("b"); !held || !until.Equal(start.Add(26*time.Second)) {
		t.Fatalf("b at expiry: held %v until %v, want true until %v", held, until, start.Add(26*time.Second))
	}
	if held, _ := acquire("a"); held {
		t.Fatal("a took back the lease b holds")
	}
}
