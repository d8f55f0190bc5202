package jobs

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// twoNodes starts managers a (which starts first, so holds the timer
// lease) and b on one store, joined by an in-memory bus network; it also
// returns the buses.
func twoNodes(t *testing.T) (st store.JobStore, a, b *testNode, busA, busB cluster.Bus) {
	t.Helper()
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ba, err := net.Join("a")
	if err != nil {
		t.Fatal(err)
	}
	bb, err := net.Join("b")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the managers stop before their buses close.
	t.Cleanup(func() { ba.Close(); bb.Close() })
	st = openTestStore(t)
	a = startNodeWith(t, Config{Store: st, NodeID: "a", Bus: ba, TimerLeaseTTL: time.Minute})
	b = startNodeWith(t, Config{Store: st, NodeID: "b", Bus: bb, TimerLeaseTTL: time.Minute})
	if !a.HoldsTimerLease() || b.HoldsTimerLease() {
		t.Fatalf("lease held: a %v, b %v; want a alone", a.HoldsTimerLease(), b.HoldsTimerLease())
	}
	return st, a, b, ba, bb
}

type waitResult struct {
	woken *store.Job
	ok    bool
	took  time.Duration
}

// waitOn starts a WAIT on m for job id's next phase change, as the UWS
// binding does (watch, read, wait), and returns where its result comes.
func waitOn(t *testing.T, m *Manager, id string, d time.Duration) <-chan waitResult {
	t.Helper()
	w := m.Watch(id)
	j, err := m.Job(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan waitResult, 1)
	go func() {
		start := time.Now()
		woken, ok := m.WaitPhase(context.Background(), j, w, d)
		out <- waitResult{woken, ok, time.Since(start)}
	}()
	wait.For(t, "the WAIT to block", func() bool { return m.Waiting(id) == 1 })
	return out
}

// TestWaitOnOtherNodeWokenByPhaseChange: a WAIT on node b returns with
// the job's new phase when node a changes it.
func TestWaitOnOtherNodeWokenByPhaseChange(t *testing.T) {
	st, a, b, _, _ := twoNodes(t)
	putJob(t, st, "j1", time.Now().Add(time.Hour))
	res := waitOn(t, b.Manager, "j1", time.Minute)
	if _, err := a.Abort("j1", "stopped on a"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if !r.ok || r.woken == nil || r.woken.Phase != store.PhaseAborted || r.woken.ErrorSummary != "stopped on a" {
			t.Fatalf("WAIT on b returned %+v, want the job ABORTED by a", r)
		}
	case <-time.After(wait.Default):
		t.Fatal("WAIT on b did not return after a aborted the job")
	}
}

// TestWaitOnOtherNodeWokenByDeletion: a WAIT on b ends when a deletes the
// job, without a job (the caller then reads it again and finds it gone).
// The job has ended already, so the deletion is its only change (an
// unfinished one is aborted first).
func TestWaitOnOtherNodeWokenByDeletion(t *testing.T) {
	st, a, b, _, _ := twoNodes(t)
	if err := st.CreateJob(t.Context(), store.Job{ID: "j1", Action: "noop", Phase: store.PhaseCompleted}); err != nil {
		t.Fatal(err)
	}
	res := waitOn(t, b.Manager, "j1", time.Minute)
	if err := a.Remove(t.Context(), "j1"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if !r.ok || r.woken != nil {
			t.Fatalf("WAIT on b returned %+v, want the wait ended without a job", r)
		}
	case <-time.After(wait.Default):
		t.Fatal("WAIT on b did not return after a deleted the job")
	}
}

// TestStaleEventDoesNotEndWait: an event whose phase the store does not
// confirm (late, or forged) wakes a WAIT, which reads the job, finds it in
// the phase it waits to leave and goes on waiting.
func TestStaleEventDoesNotEndWait(t *testing.T) {
	st, _, b, busA, _ := twoNodes(t)
	putJob(t, st, "j1", time.Now().Add(time.Hour))
	const d = 300 * time.Millisecond
	res := waitOn(t, b.Manager, "j1", d)
	body, _ := json.Marshal(Event{Job: "j1", Change: ChangePhase, Phase: store.PhaseCompleted, Node: "a"})
	if err := busA.Publish(&cluster.Msg{Subject: EventSubject(cluster.DefaultPrefix), Data: body}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if !r.ok || r.woken != nil || r.took < d {
			t.Fatalf("WAIT on b returned %+v after %v, want the whole wait (%v) without a job", r, r.took, d)
		}
	case <-time.After(wait.Default):
		t.Fatal("WAIT on b did not end")
	}
}

// TestTimersFollowOtherNodesChanges: a change made on b, which does not
// run the timers, re-arms them on a, which does: a destruction time b
// moves into the past is carried out by a.
func TestTimersFollowOtherNodesChanges(t *testing.T) {
	st, a, b, _, _ := twoNodes(t)
	putJob(t, st, "j1", time.Now().Add(time.Hour)) // stored after a loaded its timers
	if err := b.SetDestruction(t.Context(), "j1", time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "a to arm the destruction b set", func() bool { return slices.Contains(timerKeys(a.Manager), "destroy:j1") })
	if got := timerKeys(b.Manager); len(got) != 0 {
		t.Errorf("b armed timers %v without the lease", got)
	}
	if err := b.SetDestruction(t.Context(), "j1", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "a to destroy the job", func() bool { return jobPhase(t, st, "j1") == store.PhaseArchived && a.blobs.has("j1") })
	if b.blobs.has("j1") {
		t.Error("b destroyed the job too")
	}
	// A deletion on b disarms a's timers of the job.
	putJob(t, st, "j2", time.Now().Add(time.Hour))
	if err := b.SetDestruction(t.Context(), "j2", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "a to arm j2's destruction", func() bool { return slices.Contains(timerKeys(a.Manager), "destroy:j2") })
	if err := b.Remove(t.Context(), "j2"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "a to disarm the timers of the job b deleted", func() bool { return !slices.Contains(timerKeys(a.Manager), "destroy:j2") })
}
