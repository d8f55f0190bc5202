package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/web"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// roleToken signs an API token for sub with role's scopes, as the
// dashboard's /account/token/create mints it (web.serveAccountToken).
func (s *testServer) roleToken(sub string, role web.Role) string {
	c := s.claims("", role.Scopes()...)
	c.Subject, c.Prefix, c.BookingID = sub, "", ""
	return s.sign(c)
}

// mint asks the token API for a token and returns the status, the token
// (on 200) and the error code (otherwise).
func (s *testServer) mint(minter, body string) (int, string, string) {
	s.t.Helper()
	st, b := s.api("POST", "/api/v1/tokens", minter, body)
	var ok struct{ Token string }
	if st == http.StatusOK && (json.Unmarshal(b, &ok) != nil || ok.Token == "") {
		s.t.Fatalf("mint %s: 200 without a token: %s", body, b)
	}
	return st, ok.Token, errCode(b)
}

// verified returns the claims of a token the server signed.
func (s *testServer) verified(tok string) *auth.Claims {
	s.t.Helper()
	c, err := auth.NewVerifier(s.key, s.url, auth.VerifierOptions{Now: s.clock.Now}).Verify(tok)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// TestOperatorTokenStaysWithinTheOperatorRole performs the attack of issue
// 12, item 4: an operator's account token (the scopes the dashboard gives
// the operator role) reads the audit log, removes a revocation, allows a
// denied booking and mints an admin token for another subject. Each must be
// refused by the API itself with 403 and a JSON error, while the operator
// keeps its rights (deny, revoke, status, mint for itself, every owner's
// jobs) and an admin's token may do all of it.
func TestOperatorTokenStaysWithinTheOperatorRole(t *testing.T) {
	s := startServer(t, nil)
	operator := s.roleToken("oidc:olga", web.RoleOperator)
	admin := s.roleToken("oidc:ada", web.RoleAdmin)
	viewer := s.roleToken("oidc:vic", web.RoleViewer)

	// What an operator may do.
	if st, b := s.api("POST", "/api/v1/revocations", operator, `{"kind":"subject","value":"mallory","ttl":"1h"}`); st != http.StatusOK {
		t.Fatalf("operator revokes a subject: %d %s", st, b)
	}
	if st, b := s.api("POST", "/bids/deny?bid=b9&exp="+future(s, time.Hour), operator, ""); st != http.StatusNoContent {
		t.Fatalf("operator denies a booking: %d %s", st, b)
	}
	for _, path := range []string{"/api/v1/revocations", "/bids/deny", "/status"} {
		if st, b := s.api("GET", path, operator, ""); st != http.StatusOK {
			t.Fatalf("operator GET %s: %d %s", path, st, b)
		}
	}

	// What only an admin may do: each refused with a JSON 403.
	refused := []struct {
		name, method, path, body, code string
	}{
		{"read the audit log", "GET", "/api/v1/audit", "", "scope_forbidden"},
		{"remove a revocation", "DELETE", "/api/v1/revocations/subject/mallory", "", "scope_forbidden"},
		{"allow a denied booking", "POST", "/bids/allow?bid=b9&exp=" + future(s, time.Hour), "", "scope_forbidden"},
		{"mint relay:admin", "POST", "/api/v1/tokens", `{"scopes":["relay:admin"],"ttl":"1h"}`, "scope_forbidden"},
		{"mint relay:issue", "POST", "/api/v1/tokens", `{"scopes":["relay:issue"],"ttl":"1h"}`, "scope_forbidden"},
		{"mint for another subject", "POST", "/api/v1/tokens", `{"topic":"lab","scopes":["read"],"sub":"carol","ttl":"1h"}`, "subject_forbidden"},
		{"mint its own scopes for another subject", "POST", "/api/v1/tokens", `{"scopes":["relay:deny"],"sub":"carol","ttl":"1h"}`, "subject_forbidden"},
	}
	for _, tc := range refused {
		t.Run("operator cannot "+tc.name, func(t *testing.T) {
			if st, b := s.api(tc.method, tc.path, operator, tc.body); st != http.StatusForbidden || errCode(b) != tc.code {
				t.Fatalf("got %d %s, want 403 %s", st, b, tc.code)
			}
		})
	}
	if _, b := s.api("GET", "/api/v1/revocations?kind=subject", admin, ""); !json.Valid(b) || !contains(b, `"value":"mallory"`) {
		t.Fatalf("the operator's refused removal removed the revocation: %s", b)
	}
	if _, b := s.api("GET", "/bids/allow", admin, ""); contains(b, "b9") {
		t.Fatalf("the operator's refused allow was recorded: %s", b)
	}

	// A token an operator mints never carries more than the operator's,
	// and names the operator.
	st, tok, code := s.mint(operator, `{"topic":"lab","scopes":["read","write"],"booking_id":"b3","ttl":"1h"}`)
	if st != http.StatusOK {
		t.Fatalf("operator mints a connection token: %d %s", st, code)
	}
	if c := s.verified(tok); c.Subject != "oidc:olga" || c.BookingID != "b3" {
		t.Fatalf("an operator's token names sub %q booking %q, want the operator's own subject", c.Subject, c.BookingID)
	}
	s.dial("lab", tok)

	st, tok, code = s.mint(operator, `{"scopes":["relay:deny","jobs:read"],"ttl":"1h"}`)
	if st != http.StatusOK {
		t.Fatalf("operator mints its own scopes for itself: %d %s", st, code)
	}
	if c := s.verified(tok); c.Subject != "oidc:olga" || !slices.Equal(c.Scopes, []string{auth.ScopeDeny, auth.ScopeJobsRead}) {
		t.Fatalf("minted %q %v", c.Subject, c.Scopes)
	}

	// Jobs: an operator sees every owner's job, a viewer only its own.
	s.agent("c1")
	id := s.createJob(s.userToken("alice", auth.ScopeJobsWrite), url.Values{"ACTION": {"download"}, "TARGETS": {"c1"}, "SERVER": {"a"}})
	if st, b := s.api("GET", "/api/v1/jobs/"+id, operator, ""); st != http.StatusOK {
		t.Fatalf("operator reads another owner's job: %d %s", st, b)
	}
	if st, b := s.api("GET", "/api/v1/jobs/"+id, viewer, ""); st != http.StatusForbidden || errCode(b) != "job_forbidden" {
		t.Fatalf("viewer reads another owner's job: %d %s", st, b)
	}

	// An admin may do all of it.
	if st, b := s.api("GET", "/api/v1/audit", admin, ""); st != http.StatusOK || !contains(b, `"actor":"oidc:olga"`) {
		t.Fatalf("admin reads the audit log: %d %s", st, b)
	}
	if st, b := s.api("DELETE", "/api/v1/revocations/subject/mallory", admin, ""); st != http.StatusNoContent {
		t.Fatalf("admin removes a revocation: %d %s", st, b)
	}
	if st, b := s.api("POST", "/bids/allow?bid=b9&exp="+future(s, time.Hour), admin, ""); st != http.StatusNoContent {
		t.Fatalf("admin allows a booking: %d %s", st, b)
	}
	st, tok, code = s.mint(admin, `{"scopes":["relay:admin"],"sub":"carol","ttl":"1h"}`)
	if st != http.StatusOK {
		t.Fatalf("admin mints relay:admin for another subject: %d %s", st, code)
	}
	if c := s.verified(tok); c.Subject != "carol" || !c.HasScope(auth.ScopeAdmin) {
		t.Fatalf("admin's minted token: %q %v", c.Subject, c.Scopes)
	}
}

// TestIssuerCannotReachSystemTopics performs the attack of issue 12, item
// 12: a booking system's relay:issue token mints read tokens for jobs/* (or
// *) and reads every user's live job log. The token API refuses topics
// within the system's; a broader pattern it mints does not reach them at
// the access endpoint; the job's owner (with the token the dashboard mints
// for one job's log) and an operator still read the log.
func TestIssuerCannotReachSystemTopics(t *testing.T) {
	s := startServer(t, nil)
	issuer := s.sign(s.claims("", auth.ScopeIssue))
	c1 := s.agent("c1")
	owner := s.userToken("alice", auth.ScopeJobsWrite)
	id := s.createJob(owner, url.Values{"ACTION": {"download"}, "TARGETS": {"c1"}, "SERVER": {"a"}})
	logTopic := jobs.LogTopic(id)

	for _, topic := range []string{"jobs/*", logTopic, "jobs/" + id + "/*", "stats", "agents"} {
		st, _, code := s.mint(issuer, `{"topic":"`+topic+`","scopes":["read"],"sub":"student7","ttl":"1h"}`)
		if st != http.StatusForbidden || code != "topic_forbidden" {
			t.Errorf("issuer mints read on %s: %d %s, want 403 topic_forbidden", topic, st, code)
		}
	}
	// The booking system's flow is unchanged: read/write for its users.
	st, lab, code := s.mint(issuer, `{"topic":"lab/*","scopes":["read","write"],"sub":"student7","booking_id":"b7","ttl":"1h"}`)
	if st != http.StatusOK {
		t.Fatalf("issuer mints for a user: %d %s", st, code)
	}
	if c := s.verified(lab); c.Subject != "student7" || c.BookingID != "b7" {
		t.Fatalf("issued token: sub %q booking %q", c.Subject, c.BookingID)
	}
	s.dial("lab/bench1", lab)

	// "*" is minted, but reaches no system topic.
	st, every, code := s.mint(issuer, `{"topic":"*","scopes":["read"],"sub":"student7","ttl":"1h"}`)
	if st != http.StatusOK {
		t.Fatalf("issuer mints *: %d %s", st, code)
	}
	s.dial("lab/bench2", every)
	for topic, want := range map[string]string{logTopic: "topic_forbidden", "stats": "scope_forbidden", "agents": "scope_forbidden"} {
		if st, b := s.api("POST", "/session/"+topic, every, ""); st != http.StatusForbidden || errCode(b) != want {
			t.Errorf("a * read token on %s: %d %s, want 403 %s", topic, st, b, want)
		}
	}

	// The owner reads the job's log with a token for that one topic (as the
	// dashboard's live-token mints it after the jobs API let the owner see
	// the job); an operator reaches it with a pattern and jobs:admin.
	ownerLog := s.claims(logTopic, auth.ScopeRead)
	ownerLog.Subject, ownerLog.BookingID = "alice", ""
	ownerConn := s.dial(logTopic, s.sign(ownerLog))
	operator := s.roleToken("oidc:olga", web.RoleOperator)
	st, opLog, code := s.mint(operator, `{"topic":"jobs/*","scopes":["read","jobs:admin"],"ttl":"1h"}`)
	if st != http.StatusOK {
		t.Fatalf("operator mints jobs/*: %d %s", st, code)
	}
	opConn := s.dial(logTopic, opLog)

	if st, b, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", owner, url.Values{"PHASE": {"RUN"}}); st != http.StatusSeeOther {
		t.Fatalf("PHASE=RUN: %d %s", st, b)
	}
	nextRun(t, c1)
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	send(t, c1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"hello"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for who, conn := range map[string]*client.Conn{"owner": ownerConn, "operator": opConn} {
		_, line, err := conn.Read(ctx)
		if err != nil || !contains(line, `"lines":["hello"]`) {
			t.Fatalf("%s reads the job's log: %s %v", who, line, err)
		}
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
