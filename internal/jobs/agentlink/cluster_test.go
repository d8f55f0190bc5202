package agentlink

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
)

// clusterNode starts a Manager and a Link named id on st and bus, as a
// node of a cluster wires them; they stop when the test ends.
func clusterNode(t *testing.T, st store.Store, bus cluster.Bus, id string) *harness {
	t.Helper()
	return clusterNodeWith(t, jobs.Config{Store: st, NodeID: id, Bus: bus})
}

// clusterNodeWith is clusterNode with jc (ResultsDir set here).
func clusterNodeWith(t *testing.T, jc jobs.Config) *harness {
	t.Helper()
	st, bus := jc.Store.(store.Store), jc.Bus
	jc.ResultsDir = filepath.Join(t.TempDir(), "blobs")
	m, err := jobs.New(jc)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLink(m, LinkConfig{Bus: bus})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l.Stop(ctx)
		m.Stop(ctx)
	})
	return &harness{st: st, jobs: m, link: l}
}

// twoClusterNodes starts nodes a (first: it runs the job timers) and b
// on one store and an in-memory bus network; jc, if given, tunes both.
func twoClusterNodes(t *testing.T, jc ...jobs.Config) (a, b *harness) {
	t.Helper()
	a, b, _ = twoClusterNodesBus(t, jc...)
	return a, b
}

// twoClusterNodesBus is twoClusterNodes, and returns b's bus too.
func twoClusterNodesBus(t *testing.T, jc ...jobs.Config) (a, b *harness, busB cluster.Bus) {
	t.Helper()
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	busA, err := net.Join("a")
	if err != nil {
		t.Fatal(err)
	}
	mb, err := net.Join("b")
	if err != nil {
		t.Fatal(err)
	}
	busB = mb
	t.Cleanup(func() { busA.Close(); busB.Close() })
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var cfg jobs.Config
	if len(jc) > 0 {
		cfg = jc[0]
	}
	cfg.Store = st
	ca, cb := cfg, cfg
	ca.NodeID, ca.Bus = "a", busA
	cb.NodeID, cb.Bus = "b", busB
	return clusterNodeWith(t, ca), clusterNodeWith(t, cb), busB
}

func connectedIDs(l *Link) []string {
	var ids []string
	for _, a := range l.Connected() {
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	return ids
}

func phaseOf(t *testing.T, h *harness, id string) store.Phase {
	t.Helper()
	j, err := h.jobs.Job(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j.Phase
}

// TestJobOnOneNodeRunsOnAgentOfAnother: an agent (its id has a dot, which
// must stay inside one subject token) connected to node b is
// known on node a; a job created and run on a reaches it through the bus,
// its result (reported to b) completes the job, a WAIT on a wakes at the
// change, and an abort on a reaches the agent too.
func TestJobOnOneNodeRunsOnAgentOfAnother(t *testing.T) {
	a, b := twoClusterNodes(t)
	ag, _ := b.connect(t, "lab.ag1", false)
	if err := ag.next(jobproto.TypeWelcome, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "node a to learn of b's agent", func() bool { return slices.Equal(connectedIDs(a.link), []string{"lab.ag1"}) })
	if c, _ := a.link.Status("lab.ag1", "none"); !c {
		t.Fatal("node a's Status: ag1 not connected")
	}

	ctx := t.Context()
	j, err := a.jobs.Create(ctx, jobs.Spec{Owner: "alice", Action: "x", Targets: "lab.ag1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.jobs.Run(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if got := phaseOf(t, a, j.ID); got != store.PhaseExecuting {
		t.Fatalf("after RUN on a: phase %s, want EXECUTING (dispatched to b's agent)", got)
	}
	if err := ag.next(jobproto.TypeRun, 5*time.Second); err != nil {
		t.Fatalf("the agent on b: %v", err)
	}
	// A WAIT on a, for the job to leave EXECUTING.
	w := a.jobs.Watch(j.ID)
	cur, err := a.jobs.Job(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	woken := make(chan *store.Job, 1)
	go func() {
		jj, _ := a.jobs.WaitPhase(context.Background(), cur, w, time.Minute)
		woken <- jj
	}()
	now := time.Now()
	ag.send(t, jobproto.Started{Type: jobproto.TypeStarted, Job: j.ID, StartedAt: now})
	wait.For(t, "node a to see the run running on b", func() bool { _, running := a.link.Status("lab.ag1", j.ID); return running })
	ag.send(t, jobproto.Result{Type: jobproto.TypeResult, Job: j.ID, Outcome: jobproto.OutcomeSucceeded, StartedAt: now, EndedAt: now})
	if err := ag.next(jobproto.TypeAck, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case jj := <-woken:
		if jj == nil || jj.Phase != store.PhaseCompleted {
			t.Fatalf("WAIT on a returned %+v, want the job COMPLETED", jj)
		}
	case <-time.After(wait.Default):
		t.Fatal("WAIT on a did not return when the job completed on b")
	}

	// An abort decided on a reaches the agent on b.
	j2, err := a.jobs.Create(ctx, jobs.Spec{Owner: "alice", Action: "x", Targets: "lab.ag1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.jobs.Run(ctx, j2.ID); err != nil {
		t.Fatal(err)
	}
	if err := ag.next(jobproto.TypeRun, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := a.jobs.Abort(j2.ID, "stop"); err != nil {
		t.Fatal(err)
	}
	if err := ag.next(jobproto.TypeAbort, 5*time.Second); err != nil {
		t.Fatalf("the agent on b: %v", err)
	}
}

// TestAgentPresenceFollowsNodes: a node that comes up later learns the
// agents the others hold (their lists), and an agent that disconnects is
// forgotten everywhere.
func TestAgentPresenceFollowsNodes(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	busB, err := net.Join("b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busB.Close() })
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := clusterNode(t, st, busB, "b")
	ag, conn := b.connect(t, "ag1", false)
	if err := ag.next(jobproto.TypeWelcome, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	busA, err := net.Join("a") // after the agent connected to b
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busA.Close() })
	a := clusterNode(t, st, busA, "a")
	wait.For(t, "node a, up later, to learn of b's agent", func() bool { return slices.Equal(connectedIDs(a.link), []string{"ag1"}) })

	conn.Abort() // the agent's channel on b ends
	wait.For(t, "node a to forget the agent", func() bool { return len(connectedIDs(a.link)) == 0 })

	// A node that leaves takes its agents with it.
	ag2, _ := b.connect(t, "ag2", false)
	if err := ag2.next(jobproto.TypeWelcome, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "node a to learn of ag2", func() bool { return slices.Equal(connectedIDs(a.link), []string{"ag2"}) })
	busB.Close()
	wait.For(t, "node a to forget the agents of b, gone", func() bool { return len(connectedIDs(a.link)) == 0 })
}

// TestRunOfAgentOnOtherNodeLost: a run on an agent connected to b is
// marked lost after the grace period by a, which runs the timers, and the
// job ends in ERROR, when the agent's channel ends and does not come back,
// and when b leaves the cluster with it.
func TestRunOfAgentOnOtherNodeLost(t *testing.T) {
	for _, how := range []string{"agent disconnects", "node leaves"} {
		t.Run(how, func(t *testing.T) {
			a, b, busB := twoClusterNodesBus(t, jobs.Config{LostGrace: 200 * time.Millisecond})
			ag, conn := b.connect(t, "ag1", false)
			if err := ag.next(jobproto.TypeWelcome, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			wait.For(t, "node a to learn of b's agent", func() bool { return slices.Equal(connectedIDs(a.link), []string{"ag1"}) })
			ctx := t.Context()
			j, err := a.jobs.Create(ctx, jobs.Spec{Owner: "alice", Action: "x", Targets: "ag1"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.jobs.Run(ctx, j.ID); err != nil {
				t.Fatal(err)
			}
			if err := ag.next(jobproto.TypeRun, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			ag.send(t, jobproto.Started{Type: jobproto.TypeStarted, Job: j.ID, StartedAt: time.Now()})
			wait.For(t, "node a to see the run running on b", func() bool { _, running := a.link.Status("ag1", j.ID); return running })
			if how == "node leaves" {
				busB.Close()
			} else {
				conn.Abort()
			}
			wait.For(t, "the run to be marked lost and the job to end", func() bool { return phaseOf(t, a, j.ID) == store.PhaseError })
			r, err := a.jobs.AgentRun(ctx, j.ID, "ag1")
			if err != nil || r.State != store.RunLost {
				t.Fatalf("run: %+v, %v; want state lost", r, err)
			}
		})
	}
}

// TestCommandSubject: an agent id is one token of its command subject
// whatever dots it has, and comes back from it.
func TestCommandSubject(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"a", "a.b", "a..b", ".a", "a.", "a-b_c~d"} {
		s := CommandSubject("sb", id)
		if err := cluster.ValidSubject(s); err != nil {
			t.Errorf("CommandSubject(%q) = %q: %v", id, s, err)
		}
		if got := agentOfCommand(s, "sb"); got != id {
			t.Errorf("agentOfCommand(%q) = %q, want %q", s, got, id)
		}
		if other, ok := seen[s]; ok {
			t.Errorf("agents %q and %q share the subject %q", other, id, s)
		}
		seen[s] = id
	}
}

// TestPresenceEpochsAndGaps: what node a knows of a node c's agents
// follows c's numbered announcements: an old number is ignored, a node
// restarted under the same id (a new epoch) voids what a knew of it, and
// a skipped number makes a ask c for its whole list.
func TestPresenceEpochsAndGaps(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	busC, err := net.Join("c") // a node speaking presence by hand
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busC.Close() })
	var (
		mu   sync.Mutex
		list = presenceMsg{Node: "c", Epoch: "e1", Seq: 0, List: true, Agents: []remoteState{{ID: "boot"}}}
	)
	lists := make(chan struct{}, 10)
	sub, err := busC.Subscribe(cluster.NodeSubject(cluster.DefaultPrefix, "c", AgentService), func(req *cluster.Msg) {
		mu.Lock()
		body, _ := json.Marshal(list)
		mu.Unlock()
		cluster.Respond(busC, req, &cluster.Msg{Data: body})
		lists <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	busA, err := net.Join("a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busA.Close() })
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := clusterNode(t, st, busA, "a")

	publish := func(m presenceMsg) {
		t.Helper()
		m.Node = "c"
		body, _ := json.Marshal(m)
		if err := busC.Publish(&cluster.Msg{Subject: PresenceSubject(cluster.DefaultPrefix), Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	knows := func(ids ...string) func() bool {
		return func() bool { return slices.Equal(connectedIDs(a.link), ids) }
	}

	wait.For(t, "a to take c's list when c is seen up", knows("boot"))
	publish(presenceMsg{Epoch: "e1", Seq: 1, Agents: []remoteState{{ID: "x"}}})
	publish(presenceMsg{Epoch: "e1", Seq: 1, Gone: "x"}) // a number applied already
	publish(presenceMsg{Epoch: "e1", Seq: 2, Agents: []remoteState{{ID: "w"}}})
	wait.For(t, "a to learn of x and w, ignoring the old number", knows("boot", "w", "x"))
	publish(presenceMsg{Epoch: "e2", Seq: 1, Agents: []remoteState{{ID: "y"}}})
	wait.For(t, "c's restart to void what a knew and bring y", knows("y"))
	publish(presenceMsg{Epoch: "e2", Seq: 2, Gone: "y"})
	wait.For(t, "a to forget y", knows())

	mu.Lock()
	list = presenceMsg{Node: "c", Epoch: "e2", Seq: 9, List: true, Agents: []remoteState{{ID: "listed"}}}
	mu.Unlock()
	for len(lists) > 0 {
		<-lists
	}
	publish(presenceMsg{Epoch: "e2", Seq: 5, Agents: []remoteState{{ID: "z"}}}) // 3 and 4 were lost
	select {
	case <-lists:
	case <-time.After(wait.Default):
		t.Fatal("a did not ask c for its list after a gap")
	}
	wait.For(t, "a to take c's list", knows("listed"))
}
