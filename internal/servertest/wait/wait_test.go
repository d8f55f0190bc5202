package wait

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is a testing.TB that records a Fatalf instead of ending the
// test, so the failure path of Within can be checked.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	panic(r) // stands in for runtime.Goexit; recovered by fails
}

// fails runs Within on a recorder and returns its failure message.
func fails(t *testing.T, d time.Duration, what string, cond func() bool) (msg string) {
	r := &recorder{TB: t}
	defer func() {
		if p := recover(); p != nil && p != any(r) {
			panic(p)
		}
		msg = r.failed
	}()
	Within(r, d, what, cond)
	return r.failed
}

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		polls := 0
		For(t, "the third poll", func() bool { polls++; return polls == 3 })
		// Two pauses: 1 ms, then 2 ms (fake time).
		if got := time.Since(start); got != 3*time.Millisecond {
			t.Errorf("took %v, want 3ms", got)
		}
	})
}

func TestWithinFailsAtTheDeadlineNamingWhatItWaitedFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		msg := fails(t, time.Second, "the moon", func() bool { return false })
		if msg != "timed out waiting for the moon (1s)" {
			t.Errorf("message %q", msg)
		}
		if got := time.Since(start); got < time.Second || got > time.Second+maxPause {
			t.Errorf("failed after %v, want the 1s deadline", got)
		}
	})
}
