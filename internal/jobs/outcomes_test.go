package jobs

import (
	"maps"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// TestOutcomesCountedOnceOnTheEndingNode: a job ended on node a counts in
// a's outcomes only (b learns of the change over the bus and counts
// nothing), so the sum over the nodes is the number of jobs ended; every
// outcome phase is reported, zero included, and aborting an aborted job
// again counts nothing.
func TestOutcomesCountedOnceOnTheEndingNode(t *testing.T) {
	st, a, b, _, _ := twoNodes(t)
	zero := map[store.Phase]uint64{store.PhaseCompleted: 0, store.PhaseError: 0, store.PhaseAborted: 0}
	if got := a.Outcomes(); !maps.Equal(got, zero) {
		t.Fatalf("outcomes of a new node: %v, want %v", got, zero)
	}
	putJob(t, st, "j1", time.Now().Add(time.Hour))
	res := waitOn(t, b.Manager, "j1", time.Minute) // b has seen the change once this returns
	if _, err := a.Abort("j1", "stopped"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-res:
	case <-time.After(wait.Default):
		t.Fatal("b did not hear of the abort")
	}
	if _, err := a.Abort("j1", "again"); err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(zero)
	want[store.PhaseAborted] = 1
	if got := a.Outcomes(); !maps.Equal(got, want) {
		t.Errorf("outcomes of a, which aborted the job: %v, want %v", got, want)
	}
	if got := b.Outcomes(); !maps.Equal(got, zero) {
		t.Errorf("outcomes of b, which only heard of it: %v, want %v", got, zero)
	}
}
