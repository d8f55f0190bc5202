package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestJobSchedule: a saved definition on a schedule fires by itself;
// while as many of its jobs as allowed are unfinished its firings are
// skipped (the schedule moves on, no job is made); it fires again once
// the job ended; it survives a restart of the hub; deleting it stops it.
func TestJobSchedule(t *testing.T) {
	st := openStore(t, t.TempDir())
	mod := func(c *Config, d *Deps) {
		d.Store = st
		c.Jobs.TimerLeaseTTL, c.Jobs.TimerLeaseRenew, c.Jobs.MinScheduleEvery = 600*time.Millisecond, 50*time.Millisecond, 100*time.Millisecond
	}
	s := startServer(t, mod)
	alice := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	if status, b := s.api("PUT", "/api/v1/definitions/tick", alice, `{"action":"download","targets":"c1","parameters":{"server":"a"}}`); status != http.StatusCreated {
		t.Fatalf("PUT definition: %d %s", status, b)
	}
	type schedDoc struct {
		Every, Next string
		MaxRunning  int
	}
	schedule := func(s *testServer) (int, schedDoc) {
		status, b := s.api("GET", "/api/v1/definitions/tick/schedule", alice, "")
		var d schedDoc
		json.Unmarshal(b, &d)
		return status, d
	}
	jobsOf := func(s *testServer) []string {
		t.Helper()
		_, b := s.api("GET", "/api/v1/definitions/tick/jobs", alice, "")
		var l struct {
			Jobs []struct{ JobID, RunID string }
		}
		json.Unmarshal(b, &l)
		var out []string
		for _, j := range l.Jobs {
			if j.RunID != "schedule" {
				t.Fatalf("a scheduled job's RUNID is %q", j.RunID)
			}
			out = append(out, j.JobID)
		}
		return out
	}
	for _, bad := range []string{`{"every":"10ms"}`, `{"every":"soon"}`, `{"maxRunning":1000}`, `{"start":"tomorrow"}`, `{"when":"now"}`} {
		if status, b := s.api("PUT", "/api/v1/definitions/tick/schedule", alice, bad); status != http.StatusBadRequest {
			t.Errorf("PUT schedule %s: %d %s, want 400", bad, status, b)
		}
	}
	bob := s.userToken("bob", auth.ScopeJobsWrite)
	if status, _ := s.api("PUT", "/api/v1/definitions/tick/schedule", bob, `{"every":"1s"}`); status != http.StatusForbidden {
		t.Errorf("bob's PUT schedule: %d, want 403", status)
	}
	if status, b := s.api("PUT", "/api/v1/definitions/tick/schedule", alice, `{"every":"200ms","maxRunning":1}`); status != http.StatusOK {
		t.Fatalf("PUT schedule: %d %s", status, b)
	}

	// The first firing: a job. Unanswered, it holds the one place.
	r1 := nextRun(t, c1)
	_, first := schedule(s)
	firstNext, _ := time.Parse(time.RFC3339, first.Next)
	wait.For(t, "two more firings due and skipped", func() bool {
		_, d := schedule(s)
		next, _ := time.Parse(time.RFC3339, d.Next)
		return next.Sub(firstNext) >= 400*time.Millisecond
	})
	if got := jobsOf(s); len(got) != 1 || got[0] != r1.Job {
		t.Fatalf("jobs while the first runs: %v, want only %s", got, r1.Job)
	}
	finish(t, c1, jobproto.Result{Job: r1.Job, Outcome: jobproto.OutcomeSucceeded})
	// The next firing after the first ended: a second job.
	r2 := nextRun(t, c1)
	if r2.Job == r1.Job || r2.Params["server"] != "a" {
		t.Fatalf("second run: %+v", r2)
	}
	finish(t, c1, jobproto.Result{Job: r2.Job, Outcome: jobproto.OutcomeSucceeded})
	c1.CloseNow()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// After a restart the schedule goes on.
	s2 := startServer(t, mod)
	alice = s2.userToken("alice", auth.ScopeJobsWrite) // the new server's audience
	c1b := s2.agent("c1")
	r3 := nextRun(t, c1b)
	if r3.Job == r1.Job || r3.Job == r2.Job {
		t.Fatalf("run after the restart: %+v", r3)
	}
	if status, b, _ := s2.form("DELETE", "/api/v1/definitions/tick/schedule", alice, url.Values{}); status != http.StatusNoContent {
		t.Fatalf("DELETE schedule: %d %s", status, b)
	}
	if status, _ := schedule(s2); status != http.StatusNotFound {
		t.Fatalf("GET schedule after DELETE: %d", status)
	}
	finish(t, c1b, jobproto.Result{Job: r3.Job, Outcome: jobproto.OutcomeSucceeded})
	wait.For(t, "the third job completed", func() bool { return s2.job(alice, r3.Job, "").Phase == "COMPLETED" })
	if got := jobsOf(s2); len(got) != 3 {
		t.Fatalf("jobs of the schedule: %v, want 3", got)
	}
}
