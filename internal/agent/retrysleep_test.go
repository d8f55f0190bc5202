package agent

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// heldSleeps stands in for the agent's retry sleep (Options.sleep): each
// retry delay the agent asks for is handed to the test, and the retry
// loop stays parked until the test lets the delay pass (or the agent
// stops). A test so sees every delay chosen, and that nothing is attempted
// while one is pending, without waiting through any of them.
type heldSleeps struct{ asked chan heldSleep }

// heldSleep is one pending retry delay.
type heldSleep struct {
	d    time.Duration
	pass chan struct{}
}

func newHeldSleeps() *heldSleeps { return &heldSleeps{asked: make(chan heldSleep)} }

func (h *heldSleeps) sleep(ctx context.Context, d time.Duration) bool {
	s := heldSleep{d: d, pass: make(chan struct{})}
	select {
	case h.asked <- s:
	case <-ctx.Done():
		return false
	}
	select {
	case <-s.pass:
		return true
	case <-ctx.Done():
		return false
	}
}

// next returns the next delay a retry loop asks for, failing the test if
// none is asked for within wait.Default.
func (h *heldSleeps) next(t *testing.T, what string) heldSleep {
	t.Helper()
	select {
	case s := <-h.asked:
		return s
	case <-time.After(wait.Default):
		t.Fatalf("timed out waiting for a retry delay: %s", what)
		panic("unreachable")
	}
}

// within fails the test unless the delay is in [lo, hi].
func (s heldSleep) within(t *testing.T, lo, hi time.Duration) {
	t.Helper()
	if s.d < lo || s.d > hi {
		t.Fatalf("retry delay %v, want within [%v, %v]", s.d, lo, hi)
	}
}

// release lets the delay pass: the retry loop makes its next attempt.
func (s heldSleep) release() { close(s.pass) }
