package server

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// Targets and fates (docs/jobs.md): every targeted agent is accounted for.

// runStates maps each run of a job to its state and error.
func (s *testServer) runStates(tok, id string) map[string]string {
	s.t.Helper()
	var d struct {
		JobInfo struct {
			Runs []struct{ Agent, State, Error string } `json:"runs"`
		} `json:"jobInfo"`
	}
	status, b := s.api("GET", "/api/v1/jobs/"+id, tok, "")
	if status != 200 || json.Unmarshal(b, &d) != nil {
		s.t.Fatalf("GET job %s: %d %s", id, status, b)
	}
	out := map[string]string{}
	for _, r := range d.JobInfo.Runs {
		out[r.Agent] = r.State
		out[r.Agent+".error"] = r.Error
	}
	return out
}

// offlineAgent connects an agent (so the hub knows it and its actions) and
// disconnects it, waiting until the hub has seen it go.
func (s *testServer) offlineAgent(tok, id string, labels ...string) {
	s.t.Helper()
	a := s.agent(id, labels...)
	a.Close()
	wait.For(s.t, id+" disconnected", func() bool {
		_, b := s.api("GET", "/api/v1/agents", tok, "")
		return strings.Contains(string(b), `"id":"`+id+`","connected":false`)
	})
}

// TestJobOfflineNamedTargetEndsLost: an agent named by id that is not
// connected at RUN is not skipped: its run waits for it (state waiting) and
// ends lost after the grace period; the job ends in ERROR naming it.
// Before, the job ran on c1 alone and ended COMPLETED with no trace of c2.
func TestJobOfflineNamedTargetEndsLost(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Jobs.LostGrace = 500 * time.Millisecond })
	user := s.userToken("alice", auth.ScopeJobsWrite)
	s.offlineAgent(user, "c2")
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1,c2"}, "server": {"a"}, "PHASE": {"RUN"}})
	if st := s.runStates(user, id); st["c2"] != "waiting" && st["c2"] != "lost" {
		t.Fatalf("c2's run at RUN: %q, want waiting", st["c2"])
	}
	nextRun(t, c1)
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	d := s.waitPhase(user, id, "ERROR")
	st := s.runStates(user, id)
	if st["c1"] != "succeeded" || st["c2"] != "lost" || !strings.Contains(st["c2.error"], "not connected within") {
		t.Fatalf("runs: %v", st)
	}
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "1 of 2 agents failed: c2 lost") {
		t.Fatalf("summary: %+v", d.ErrorSummary)
	}
}

// TestJobWaitingTargetRunsWhenItConnects: a target that connects within the
// grace period gets its run.
func TestJobWaitingTargetRunsWhenItConnects(t *testing.T) {
	s := startServer(t, nil) // the default grace: a minute
	user := s.userToken("alice", auth.ScopeJobsWrite)
	s.offlineAgent(user, "c1", "role=client")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"role=client"}, "server": {"a"}, "PHASE": {"RUN"}})
	if st := s.runStates(user, id); st["c1"] != "waiting" {
		t.Fatalf("c1's run at RUN: %v, want waiting", st)
	}
	c1 := s.agent("c1", "role=client")
	if r := nextRun(t, c1); r.Job != id {
		t.Fatalf("run for %s, want %s", r.Job, id)
	}
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	s.waitPhase(user, id, "COMPLETED")
}

// TestJobRequireAvailableRecordsSkipped: REQUIRE=available runs on the
// targets connected at RUN and records the others as skipped, with the
// reason; the job completes when those that ran succeeded. With none
// connected the job ends in ERROR at once.
func TestJobRequireAvailableRecordsSkipped(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	s.offlineAgent(user, "c2", "role=client")
	c1 := s.agent("c1", "role=client")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"role=client"}, "REQUIRE": {"available"},
		"server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	d := s.waitPhase(user, id, "COMPLETED")
	st := s.runStates(user, id)
	if st["c1"] != "succeeded" || st["c2"] != "skipped" || !strings.Contains(st["c2.error"], "not connected at RUN") {
		t.Fatalf("runs: %v", st)
	}
	if d.Parameters["require"] != "available" {
		t.Fatalf("parameters: %v", d.Parameters)
	}

	c1.Close()
	wait.For(t, "c1 disconnected", func() bool {
		_, b := s.api("GET", "/api/v1/agents", user, "")
		return strings.Contains(string(b), `"id":"c1","connected":false`)
	})
	id = s.createJob(user, url.Values{"action": {"download"}, "targets": {"role=client"}, "REQUIRE": {"available"},
		"server": {"a"}, "PHASE": {"RUN"}})
	d = s.waitPhase(user, id, "ERROR")
	if st := s.runStates(user, id); st["c1"] != "skipped" || st["c2"] != "skipped" {
		t.Fatalf("runs: %v", st)
	}
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "no targeted agent can run") {
		t.Fatalf("summary: %+v", d.ErrorSummary)
	}

	if status, body, _ := s.form("POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1"},
		"REQUIRE": {"some"}, "server": {"a"}}); status != 400 || !strings.Contains(body, "invalid_parameter") {
		t.Fatalf("REQUIRE=some: %d %s", status, body)
	}
}

// TestJobRunsQueueForMaxConcurrent: an agent declaring max_concurrent 2
// gets two runs of the action at once; the others are queued on the hub
// (visible as queued) and sent in the order of their RUN as runs end.
func TestJobRunsQueueForMaxConcurrent(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	act := downloadAction()
	act.MaxConcurrent = 2
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c1, err := bench.DialAgent(ctx, s.url, s.agentToken("c1"), jobproto.Hello{Agent: "c1", Actions: []jobproto.Action{act}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.CloseNow()
	var ids []string
	for range 4 {
		ids = append(ids, s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}}))
	}
	got := []string{nextRun(t, c1).Job, nextRun(t, c1).Job}
	slices.Sort(got)
	first := slices.Sorted(slices.Values(ids[:2]))
	if !slices.Equal(got, first) {
		t.Fatalf("first runs sent: %v, want %v", got, first)
	}
	for _, id := range ids[2:] {
		if st := s.runStates(user, id); st["c1"] != "queued" {
			t.Fatalf("job %s with both slots taken: run %v, want queued", id, st)
		}
	}
	finish(t, c1, jobproto.Result{Job: ids[1], Outcome: jobproto.OutcomeSucceeded})
	if r := nextRun(t, c1); r.Job != ids[2] {
		t.Fatalf("after a slot freed: run of %s, want %s (the oldest queued)", r.Job, ids[2])
	}
	if st := s.runStates(user, ids[3]); st["c1"] != "queued" {
		t.Fatalf("last job: %v, want still queued", st)
	}
	finish(t, c1, jobproto.Result{Job: ids[0], Outcome: jobproto.OutcomeSucceeded})
	if r := nextRun(t, c1); r.Job != ids[3] {
		t.Fatalf("after another slot freed: run of %s, want %s", r.Job, ids[3])
	}
	for _, id := range ids[2:] {
		finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	}
	for _, id := range ids {
		s.waitPhase(user, id, "COMPLETED")
	}

	// Aborting a job whose run is still queued ends that run at once.
	for range 3 {
		ids = append(ids, s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}}))
	}
	nextRun(t, c1)
	nextRun(t, c1)
	last := ids[len(ids)-1]
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+last+"/phase", user, url.Values{"PHASE": {"ABORT"}}); status != 303 {
		t.Fatalf("abort: %d %s", status, body)
	}
	s.waitPhase(user, last, "ABORTED")
	if st := s.runStates(user, last); st["c1"] != "aborted" || !strings.Contains(st["c1.error"], "before the run was sent") {
		t.Fatalf("aborted queued run: %v", st)
	}
}

// TestJobMetricsOutliveDestruction: destruction deletes a job's files but
// keeps each run's outcome and metrics (still in the job's jobInfo, nested
// as the agent sent them). Before, ClearResults emptied the metrics too.
func TestJobMetricsOutliveDestruction(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := []byte("payload")
	if status, err := c1.Upload(ctx, id, "out.txt", out); err != nil || status != 201 {
		t.Fatalf("upload: %d %v", status, err)
	}
	metrics := json.RawMessage(`{"bytes_read":{"127.0.0.1:8080":5}}`)
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Metrics: metrics,
		Files: []jobproto.File{bench.FileOf("out.txt", out)}})
	s.waitPhase(user, id, "COMPLETED")
	soon := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/destruction", user, url.Values{"DESTRUCTION": {soon}}); status != 303 {
		t.Fatalf("destruction: %d %s", status, body)
	}
	d := s.waitPhase(user, id, "ARCHIVED")
	if len(d.Results) != 0 {
		t.Fatalf("an archived job lists results: %+v", d.Results)
	}
	if status, _ := s.api("GET", "/api/v1/jobs/"+id+"/results/c1/out.txt", user, ""); status != 404 {
		t.Fatalf("file of an archived job: status %d, want 404", status)
	}
	if len(d.JobInfo.Runs) != 1 || d.JobInfo.Runs[0].State != "succeeded" || d.JobInfo.Runs[0].ExitCode != 0 ||
		string(d.JobInfo.Runs[0].Metrics) != string(metrics) {
		t.Fatalf("runs of the archived job: %+v, want the outcome and metrics %s kept", d.JobInfo.Runs, metrics)
	}
}
