package agentlink

import (
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// startedRun connects agent id, creates a job for it, runs it and has the
// agent start it; it returns the job's id and the agent's channel.
func startedRun(t *testing.T, h *harness, id string) (string, *agentEnd, *lineConn) {
	t.Helper()
	ag, conn := h.connect(t, id, false)
	if err := ag.next(jobproto.TypeWelcome, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	j, err := h.jobs.Create(ctx, jobs.Spec{Owner: "alice", Action: "x", Targets: id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.jobs.Run(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if err := ag.next(jobproto.TypeRun, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ag.send(t, jobproto.Started{Type: jobproto.TypeStarted, Job: j.ID, StartedAt: time.Now()})
	wait.For(t, "the run running", func() bool {
		r, err := h.jobs.AgentRun(ctx, j.ID, id)
		return err == nil && r.State == store.RunRunning
	})
	return j.ID, ag, conn
}

// reconnect opens a new channel for the agent with hello h and waits for
// the welcome.
func reconnect(t *testing.T, hb *harness, h jobproto.Hello) *agentEnd {
	t.Helper()
	hub, agc := tcpPair(t)
	go hb.link.AcceptAgent(newLineConn(hub), jobs.AgentGrant{ID: h.Agent})
	a := newAgentEnd(agc)
	a.send(t, h)
	if err := a.next(jobproto.TypeWelcome, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAgentBackWithoutItsRun: an agent that comes back (a new channel)
// and, saying it reports interrupted runs, lists a run it started neither
// as running nor among its results has lost it: the hub marks it lost by
// the welcome, not after the lost grace period (an hour here). An agent
// that does not say so keeps the grace period: it may still send the
// run's result.
func TestAgentBackWithoutItsRun(t *testing.T) {
	h := newHarness(t, jobs.Config{LostGrace: time.Hour}, LinkConfig{})
	ctx := t.Context()

	oldJob, _, oldConn := startedRun(t, h, "old-agent")
	oldConn.Abort()
	reconnect(t, h, hello("old-agent"))
	if r, _ := h.jobs.AgentRun(ctx, oldJob, "old-agent"); r.State != store.RunRunning {
		t.Fatalf("run of an agent without reports_interrupted: %s, want running until the grace period ends", r.State)
	}

	job, _, conn := startedRun(t, h, "ag1")
	conn.Abort()
	back := hello("ag1")
	back.ReportsInterrupted = true
	reconnect(t, h, back)
	r, err := h.jobs.AgentRun(ctx, job, "ag1")
	if err != nil || r.State != store.RunLost || !strings.Contains(r.Error, "came back without the run") {
		t.Fatalf("run after the agent came back without it: %+v, %v", r, err)
	}
	wait.For(t, "the job to end in ERROR", func() bool { return phaseOf(t, h, job) == store.PhaseError })
}

// TestInterruptedResultRecordedLost: the result of a run the agent found
// interrupted when it started again is recorded as lost, with the
// metrics and output tails it reports; the job ends at once.
func TestInterruptedResultRecordedLost(t *testing.T) {
	h := newHarness(t, jobs.Config{LostGrace: time.Hour}, LinkConfig{})
	ctx := t.Context()
	job, _, conn := startedRun(t, h, "ag1")
	conn.Abort()
	back := hello("ag1")
	back.ReportsInterrupted, back.Results = true, []string{job}
	a := reconnect(t, h, back)
	if r, _ := h.jobs.AgentRun(ctx, job, "ag1"); r.State != store.RunRunning {
		t.Fatalf("run listed among the agent's results: %s before its result, want running", r.State)
	}
	a.send(t, jobproto.Result{Type: jobproto.TypeResult, Job: job, Outcome: jobproto.OutcomeFailed, Interrupted: true,
		ExitCode: -1, Error: "interrupted: the agent ended", Metrics: []byte(`{"bytes_read":{"server-a":20971520}}`),
		Stdout: "downloading\n", StartedAt: time.Now().Add(-time.Second), EndedAt: time.Now()})
	if err := a.next(jobproto.TypeAck, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	r, err := h.jobs.AgentRun(ctx, job, "ag1")
	if err != nil || r.State != store.RunLost || string(r.Metrics) != `{"bytes_read":{"server-a":20971520}}` ||
		r.Stdout != "downloading\n" || !strings.Contains(r.Error, "interrupted") {
		t.Fatalf("interrupted run: %+v, %v", r, err)
	}
	wait.For(t, "the job to end in ERROR", func() bool { return phaseOf(t, h, job) == store.PhaseError })
}
