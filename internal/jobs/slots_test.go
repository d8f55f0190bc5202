package jobs

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// fakeAgents is an Agents whose agents are all connected and never report
// a run as running; it records the runs sent.
type fakeAgents struct {
	mu     sync.Mutex
	agents []Agent
	sent   []string // job ids
}

func (f *fakeAgents) Connected() []Agent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Agent(nil), f.agents...)
}

func (f *fakeAgents) Status(agentID, job string) (bool, bool) {
	for _, a := range f.Connected() {
		if a.ID == agentID {
			return true, false
		}
	}
	return false, false
}

func (f *fakeAgents) SendRun(agentID string, run jobproto.Run) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, run.Job)
	return true
}

func (f *fakeAgents) SendAbort(string, jobproto.Abort) bool { return true }

func (f *fakeAgents) sentJobs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

// TestSlotsDecidedOneNodeAtATime: in a cluster, a node decides an agent's
// slots only while it holds the agent's slot lease, so two nodes cannot
// both fill its last slot. While another node holds the lease a run stays
// queued; when that node lets go, the run is sent (the pump tries again).
func TestSlotsDecidedOneNodeAtATime(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bus, err := net.Join("a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	// Node b shares the store and the bus (a node alone on its bus decides
	// without the lease).
	busB, err := net.Join("node-b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busB.Close() })
	wait.For(t, "a to see node b", func() bool { return len(bus.Members()) == 2 })
	st := openTestStore(t)
	dir, err := blob.NewDir(filepath.Join(t.TempDir(), "results"))
	if err != nil {
		t.Fatal(err)
	}
	act := jobproto.Action{Name: "noop", Timeout: jobproto.Duration(time.Minute)}
	acts, _ := json.Marshal([]jobproto.Action{act})
	ctx := t.Context()
	if err := st.PutAgent(ctx, store.Agent{ID: "ag1", Actions: acts, Connected: true, Node: "a"}); err != nil {
		t.Fatal(err)
	}
	agents := &fakeAgents{agents: []Agent{{ID: "ag1", Actions: []jobproto.Action{act}}}}
	m, err := New(Config{Store: st, Blobs: dir, NodeID: "a", Bus: bus})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, agents); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Stop(sctx)
	})

	lease := SlotLeaseName("ag1")
	if held, _, err := st.AcquireLease(ctx, lease, "node-b", time.Minute); err != nil || !held {
		t.Fatalf("node b's slot lease: %v %v", held, err)
	}
	j, err := m.Create(ctx, Spec{Owner: "alice", Action: "noop", Targets: "ag1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Run(ctx, j.ID, "ag1"); err != nil || r.State != store.RunQueued {
		t.Fatalf("run while another node decides the agent's slots: %+v %v, want queued", r, err)
	}
	if sent := agents.sentJobs(); len(sent) != 0 {
		t.Fatalf("sent %v while another node held the slot lease", sent)
	}
	if err := st.ReleaseLease(ctx, lease, "node-b"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the run sent once the lease is free", func() bool {
		r, err := st.Run(ctx, j.ID, "ag1")
		return err == nil && r.State == store.RunDispatched && len(agents.sentJobs()) == 1
	})
}
