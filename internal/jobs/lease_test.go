package jobs

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
)

// deleteLog is a blob.Store that records what Delete was asked to remove:
// a job's destruction deletes its files, so it tells which node ran the
// destruction timer.
type deleteLog struct {
	blob.Store
	mu      sync.Mutex
	deleted []string
}

func (d *deleteLog) Delete(ctx context.Context, prefix string) error {
	d.mu.Lock()
	d.deleted = append(d.deleted, prefix)
	d.mu.Unlock()
	return d.Store.Delete(ctx, prefix)
}

func (d *deleteLog) has(prefix string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.deleted, prefix)
}

// cuttableStore is a store whose lease calls fail once cut, as a node's
// would when it can no longer reach the database.
type cuttableStore struct {
	store.JobStore
	cut atomic.Bool
}

func (s *cuttableStore) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, time.Time, error) {
	if s.cut.Load() {
		return false, time.Time{}, fmt.Errorf("test: %w: cut off", store.ErrUnavailable)
	}
	return s.JobStore.AcquireLease(ctx, name, holder, ttl)
}

func (s *cuttableStore) ReleaseLease(ctx context.Context, name, holder string) error {
	if s.cut.Load() {
		return fmt.Errorf("test: %w: cut off", store.ErrUnavailable)
	}
	return s.JobStore.ReleaseLease(ctx, name, holder)
}

func openTestStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), sqlite.FileName), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

type testNode struct {
	*Manager
	blobs *deleteLog
}

// startNode starts a Manager named id on st, as one node of a cluster
// sharing st; it is stopped when the test ends.
func startNode(t *testing.T, st store.JobStore, id string, ttl, renew time.Duration) *testNode {
	t.Helper()
	return startNodeWith(t, Config{Store: st, NodeID: id, TimerLeaseTTL: ttl, TimerLeaseRenew: renew})
}

// startNodeWith is startNode with cfg (Blobs is set here).
func startNodeWith(t *testing.T, cfg Config) *testNode {
	t.Helper()
	dir, err := blob.NewDir(filepath.Join(t.TempDir(), "results"))
	if err != nil {
		t.Fatal(err)
	}
	blobs := &deleteLog{Store: dir}
	cfg.Blobs = blobs
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Stop(ctx)
	})
	return &testNode{Manager: m, blobs: blobs}
}

// timerKeys returns the names of the timers a manager has armed.
func timerKeys(m *Manager) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.timers))
}

// putJob stores a PENDING job destroyed at destruction.
func putJob(t *testing.T, st store.JobStore, id string, destruction time.Time) {
	t.Helper()
	if err := st.CreateJob(t.Context(), store.Job{ID: id, Action: "noop", Phase: store.PhasePending, Destruction: destruction}); err != nil {
		t.Fatal(err)
	}
}

func jobPhase(t *testing.T, st store.JobStore, id string) store.Phase {
	t.Helper()
	j, err := st.Job(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j.Phase
}

// TestTimerLeaseOneNodeRunsTimers: of two managers on one store, only the
// lease holder arms and fires the job timers; when it stops (releasing the
// lease) the other takes over, loads the timers from the store and fires
// the due one.
func TestTimerLeaseOneNodeRunsTimers(t *testing.T) {
	st := openTestStore(t)
	now := time.Now()
	putJob(t, st, "due", now.Add(-time.Second))
	putJob(t, st, "later", now.Add(time.Hour))

	// A long ttl: a holds the lease until it lets go. b asks every 20 ms.
	a := startNode(t, st, "a", time.Minute, 20*time.Millisecond)
	b := startNode(t, st, "b", time.Minute, 20*time.Millisecond)
	if !a.HoldsTimerLease() || b.HoldsTimerLease() {
		t.Fatalf("lease held: a %v, b %v; want a alone (it started first)", a.HoldsTimerLease(), b.HoldsTimerLease())
	}
	wait.For(t, "a to destroy the due job", func() bool { return jobPhase(t, st, "due") == store.PhaseArchived && a.blobs.has("due") })
	if got := timerKeys(a.Manager); !slices.Contains(got, "destroy:later") {
		t.Errorf("holder a's timers = %v, want destroy:later among them", got)
	}
	if got := timerKeys(b.Manager); len(got) != 0 {
		t.Errorf("b, which does not hold the lease, armed timers %v", got)
	}

	// A job a has not loaded, due now: whoever runs the timers next must
	// find it in the store.
	putJob(t, st, "due2", now.Add(-time.Second))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "b to take the released lease", b.HoldsTimerLease)
	wait.For(t, "b to destroy the job due after the takeover", func() bool {
		return jobPhase(t, st, "due2") == store.PhaseArchived && b.blobs.has("due2")
	})
	if got := timerKeys(b.Manager); !slices.Contains(got, "destroy:later") {
		t.Errorf("new holder b's timers = %v, want destroy:later among them", got)
	}
	if a.blobs.has("due2") || b.blobs.has("due") {
		t.Errorf("a job was destroyed by both nodes: a deleted %v, b deleted %v", a.blobs.deleted, b.blobs.deleted)
	}
}

// TestTimerLeaseExpiresWhenHolderIsCutOff: a holder that can no longer
// renew stops its timers when its lease runs out, and the other node
// takes the lease over once it has expired in the store, with the timers.
func TestTimerLeaseExpiresWhenHolderIsCutOff(t *testing.T) {
	st := openTestStore(t)
	putJob(t, st, "later", time.Now().Add(time.Hour))
	const ttl, renew = time.Second, 50 * time.Millisecond
	aStore := &cuttableStore{JobStore: st}
	a := startNode(t, aStore, "a", ttl, renew)
	b := startNode(t, st, "b", ttl, renew)
	if !a.HoldsTimerLease() || b.HoldsTimerLease() {
		t.Fatalf("lease held: a %v, b %v; want a alone (it started first)", a.HoldsTimerLease(), b.HoldsTimerLease())
	}
	if got := timerKeys(a.Manager); !slices.Equal(got, []string{"destroy:later"}) {
		t.Fatalf("holder a's timers = %v, want [destroy:later]", got)
	}

	aStore.cut.Store(true)
	wait.For(t, "a to drop the lease it cannot renew, and its timers", func() bool {
		return !a.HoldsTimerLease() && len(timerKeys(a.Manager)) == 0
	})
	// Gaining the lease comes first, then loading the timers.
	wait.For(t, "b to take the expired lease and load the timers from the store", func() bool {
		return b.HoldsTimerLease() && slices.Equal(timerKeys(b.Manager), []string{"destroy:later"})
	})
	// b runs the timers now: a destruction moved to the past fires there.
	if err := b.SetDestruction(t.Context(), "later", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "b to destroy the job", func() bool { return jobPhase(t, st, "later") == store.PhaseArchived && b.blobs.has("later") })
	if a.blobs.has("later") {
		t.Error("a, cut off, destroyed the job too")
	}
	if a.HoldsTimerLease() {
		t.Error("a holds the lease again while cut off")
	}
}
