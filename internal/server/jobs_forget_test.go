package server

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// Forgetting an agent (DELETE /api/v1/agents/{id}, docs/jobs.md "Agents"):
// a decommissioned agent no longer makes every selector job it matches end
// in ERROR (lost after the grace period).

// agentIDs lists the ids of the agents the hub knows, with their
// connected flag.
func (s *testServer) agentIDs(tok string) map[string]bool {
	s.t.Helper()
	var d struct {
		Agents []struct {
			ID        string `json:"id"`
			Connected bool   `json:"connected"`
		} `json:"agents"`
	}
	status, b := s.api("GET", "/api/v1/agents", tok, "")
	if status != 200 || json.Unmarshal(b, &d) != nil {
		s.t.Fatalf("GET agents: %d %s", status, b)
	}
	out := map[string]bool{}
	for _, a := range d.Agents {
		out[a.ID] = a.Connected
	}
	return out
}

// errorCode returns the code of a JSON error body.
func errorCode(b []byte) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(b, &e)
	return e.Error.Code
}

// TestForgetAgent: a known offline agent is forgotten by a jobs:admin
// token (audited); a later selector job no longer targets it and completes
// on the remaining agent, while the past job keeps its run. A connected
// agent is refused (409), an unknown one is 404, a token without jobs:admin
// gets 403; an agent that connects again is known again.
func TestForgetAgent(t *testing.T) {
	s := startServer(t, nil) // the default grace: a forgotten agent still targeted would hold the job a minute
	user := s.userToken("alice", auth.ScopeJobsWrite)
	ops := s.userToken("ops", auth.ScopeJobsAdmin)
	runDownload := func() string {
		return s.createJob(user, url.Values{"action": {"download"}, "targets": {"role=client"}, "server": {"a"}, "PHASE": {"RUN"}})
	}

	// A job on both clients, then c2 is decommissioned.
	c1 := s.agent("c1", "role=client")
	c2 := s.agent("c2", "role=client")
	past := runDownload()
	if r := nextRun(t, c1); r.Job != past {
		t.Fatalf("c1: run of %s, want %s", r.Job, past)
	}
	if r := nextRun(t, c2); r.Job != past {
		t.Fatalf("c2: run of %s, want %s", r.Job, past)
	}
	finish(t, c1, jobproto.Result{Job: past, Outcome: jobproto.OutcomeSucceeded})
	finish(t, c2, jobproto.Result{Job: past, Outcome: jobproto.OutcomeSucceeded})
	s.waitPhase(user, past, "COMPLETED")
	c2.Close()
	wait.For(t, "c2 disconnected", func() bool { connected, known := s.agentIDs(user)["c2"]; return known && !connected })

	// Refusals change nothing.
	for _, tc := range []struct {
		name, id, tok string
		status        int
		code          string
	}{
		{"without jobs:admin", "c2", user, 403, "scope_forbidden"},
		{"without a token", "c2", "", 401, "missing_token"},
		{"connected", "c1", ops, 409, "agent_connected"},
		{"unknown", "c9", ops, 404, "no_such_agent"},
	} {
		if status, b := s.api("DELETE", "/api/v1/agents/"+tc.id, tc.tok, ""); status != tc.status || errorCode(b) != tc.code {
			t.Errorf("%s: DELETE agent %s: %d %s, want %d %s", tc.name, tc.id, status, b, tc.status, tc.code)
		}
	}
	if known := s.agentIDs(user); len(known) != 2 {
		t.Fatalf("agents after refusals: %v, want c1 and c2", known)
	}

	if status, b := s.api("DELETE", "/api/v1/agents/c2", ops, ""); status != 204 {
		t.Fatalf("forget c2: %d %s", status, b)
	}
	if known := s.agentIDs(user); len(known) != 1 || !known["c1"] {
		t.Fatalf("agents after forgetting c2: %v, want c1 only", known)
	}
	if status, b := s.api("DELETE", "/api/v1/agents/c2", ops, ""); status != 404 || errorCode(b) != "no_such_agent" {
		t.Fatalf("forget c2 again: %d %s, want 404 no_such_agent", status, b)
	}

	// The next selector job targets c1 alone and completes.
	next := runDownload()
	if st := s.runStates(user, next); st["c1"] == "" || st["c2"] != "" {
		t.Fatalf("runs of a job after c2 was forgotten: %v, want c1's only", st)
	}
	if r := nextRun(t, c1); r.Job != next {
		t.Fatalf("c1: run of %s, want %s", r.Job, next)
	}
	finish(t, c1, jobproto.Result{Job: next, Outcome: jobproto.OutcomeSucceeded})
	s.waitPhase(user, next, "COMPLETED")

	// Named by id, it is unknown now.
	if status, body, _ := s.form("POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1,c2"},
		"server": {"a"}}); status != 400 || !strings.Contains(body, "unknown_target") || !strings.Contains(body, "forgotten") {
		t.Fatalf("a job naming c2 after it was forgotten: %d %s, want 400 unknown_target", status, body)
	}

	// History: the past job keeps c2's run.
	if st := s.runStates(user, past); st["c2"] != "succeeded" {
		t.Fatalf("past job's runs after c2 was forgotten: %v, want c2 succeeded", st)
	}

	// Audited once, naming the actor and the agent.
	status, b := s.api("GET", "/api/v1/audit", s.adminToken(), "")
	var page struct {
		Events []struct {
			Actor, Action, Target string
			Detail                json.RawMessage
		} `json:"events"`
	}
	if status != 200 || json.Unmarshal(b, &page) != nil {
		t.Fatalf("audit: %d %s", status, b)
	}
	forgets := 0
	for _, e := range page.Events {
		if e.Action == "agent.forget" {
			forgets++
			if e.Actor != "ops" || e.Target != "agent:c2" || !strings.Contains(string(e.Detail), `"role=client"`) {
				t.Errorf("audit event %+v %s, want actor ops, target agent:c2, its labels", e, e.Detail)
			}
		}
	}
	if forgets != 1 {
		t.Fatalf("audit has %d agent.forget events, want 1: %s", forgets, b)
	}

	// An agent that comes back is simply known again.
	s.agent("c2", "role=client")
	wait.For(t, "c2 known again", func() bool { return s.agentIDs(user)["c2"] })
}
