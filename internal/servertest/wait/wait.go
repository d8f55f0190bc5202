// Package wait is the repository's one way for a test to wait for a
// condition: poll it, with a deadline, and fail naming what was awaited.
//
// It imports only the standard library so that every test can use it,
// including the internal tests of packages that servertest itself depends
// on (relay, server, jobs/agentlink), which could not import servertest
// without an import cycle. Inside a testing/synctest bubble the deadline
// and the pauses between polls are on the bubble's fake clock.
package wait

import (
	"testing"
	"time"
)

// Default is how long For waits. A deadline only matters when a test is
// about to fail, so it is generous: tests run with -race on shared CPUs.
const Default = 10 * time.Second

// maxPause bounds the pause between two polls; the first pause is a
// millisecond and each one doubles up to it, so a condition that holds
// soon is seen soon and a long wait costs little CPU.
const maxPause = 16 * time.Millisecond

// For polls cond until it returns true, failing the test (t.Fatalf, so
// call it from the test's goroutine) after Default with "timed out
// waiting for <what>".
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Default, what, cond)
}

// Within is For with a deadline of d instead of Default.
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (%v)", what, d)
		}
		time.Sleep(pause)
		pause = min(2*pause, maxPause)
	}
}
