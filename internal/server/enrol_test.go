package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

type enrolled struct {
	Agent        string    `json:"agent"`
	Labels       []string  `json:"labels"`
	Token        string    `json:"token"`
	TokenID      string    `json:"token_id"`
	Subject      string    `json:"subject"`
	ExpiresAt    time.Time `json:"expires_at"`
	RefreshURL   string    `json:"refresh_url"`
	RefreshUntil time.Time `json:"refresh_until"`
}

func (s *testServer) enrol(tok, body string) (int, enrolled, []byte) {
	s.t.Helper()
	st, b := s.api("POST", "/api/v1/agents/enrol", tok, body)
	var e enrolled
	if st == 200 {
		if err := json.Unmarshal(b, &e); err != nil {
			s.t.Fatalf("enrol answer %s: %v", b, err)
		}
	}
	return st, e, b
}

// TestEnrolAgent: an operator (jobs:admin) enrols an agent without the
// hub's secret; the agent connects with the token, renews it through the
// refresh endpoint, and revoking the agent's subject closes its channel
// (4003) and refuses the renewal. Every step is audited; the token never is.
func TestEnrolAgent(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.MaxRefreshLifetime = 3 * time.Hour })
	admin := s.adminToken()
	operator := s.userToken("olga", auth.ScopeJobsAdmin)

	// Least privilege: jobs:admin (or relay:admin); jobs:write or
	// relay:mint alone is not enough.
	for _, scope := range []string{auth.ScopeJobsWrite, auth.ScopeMint, auth.ScopeJobsRead} {
		if st, _, b := s.enrol(s.userToken("mallory", scope), `{"id":"c1","ttl":"1h"}`); st != 403 || errCode(b) != "scope_forbidden" {
			t.Fatalf("enrol with %s: %d %s", scope, st, b)
		}
	}
	for _, bad := range []struct{ body, code string }{
		{`{"ttl":"1h"}`, "invalid_id"},
		{`{"id":"a/b","ttl":"1h"}`, "invalid_id"},
		{`{"id":"..","ttl":"1h"}`, "invalid_id"},
		{`{"id":"` + strings.Repeat("x", 65) + `","ttl":"1h"}`, "invalid_id"},
		{`{"id":"c1","labels":["role"],"ttl":"1h"}`, "invalid_labels"},
		{`{"id":"c1","labels":["role=a b"],"ttl":"1h"}`, "invalid_labels"},
		{`{"id":"c1","labels":["role=a","role=a"],"ttl":"1h"}`, "invalid_labels"},
		{`{"id":"c1"}`, "invalid_ttl"},
		{`{"id":"c1","ttl":"5s"}`, "invalid_ttl"},
		{`{"id":"c1","ttl":"25h"}`, "invalid_ttl"},
		{`{"id":"c1","ttl":"1h","scopes":["relay:admin"]}`, "invalid_json"},
	} {
		if st, _, b := s.enrol(operator, bad.body); st != 400 || errCode(b) != bad.code {
			t.Fatalf("enrol %s: %d %s, want 400 %s", bad.body, st, b, bad.code)
		}
	}

	st, e, b := s.enrol(operator, `{"id":"c1","labels":["role=client","site=*"],"ttl":"1h"}`)
	if st != 200 || e.Agent != "c1" || e.Subject != "agent:c1" || e.TokenID == "" || e.RefreshURL != "/api/v1/account/token/refresh" {
		t.Fatalf("enrol: %d %s", st, b)
	}
	if d := e.ExpiresAt.Sub(s.clock.Now()); d < 59*time.Minute || d > time.Hour+time.Second {
		t.Fatalf("expires in %v", d)
	}
	if d := e.RefreshUntil.Sub(s.clock.Now()); d < 3*time.Hour-2*time.Second || d > 3*time.Hour {
		t.Fatalf("refresh until %v from now", d)
	}
	c := new(auth.Claims)
	if _, _, err := jwt.NewParser().ParseUnverified(e.Token, c); err != nil {
		t.Fatal(err)
	}
	if c.Prefix != "agent" || c.Topic != "c1" || c.Agent != "c1" || strings.Join(c.Scopes, ",") != "agent" ||
		strings.Join(c.Labels, ",") != "role=client,site=*" || c.Subject != "agent:c1" || c.ID != e.TokenID || c.OrigIssuedAt == nil {
		t.Fatalf("claims %+v", c)
	}

	// The agent connects with it and may claim its labels.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := bench.DialAgent(ctx, s.url, e.Token, jobproto.Hello{Agent: "c1", Labels: []string{"role=client", "site=UNL"}}, nil)
	if err != nil {
		t.Fatalf("agent with the enrolled token: %v", err)
	}
	defer a.CloseNow()

	// It renews its token: same claims, a later expiry, the same chain.
	s.clock.Advance(40 * time.Minute)
	st, b = s.api("POST", "/api/v1/account/token/refresh", e.Token, "")
	var renewed struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if st != 200 || json.Unmarshal(b, &renewed) != nil || !renewed.ExpiresAt.After(e.ExpiresAt) {
		t.Fatalf("renew: %d %s", st, b)
	}
	rc := new(auth.Claims)
	jwt.NewParser().ParseUnverified(renewed.Token, rc)
	if rc.Agent != "c1" || rc.Subject != "agent:c1" || rc.ID != e.TokenID || strings.Join(rc.Labels, ",") != "role=client,site=*" {
		t.Fatalf("renewed claims %+v", rc)
	}
	// The renewed token connects too (a second channel supersedes the first).
	a2, err := bench.DialAgent(ctx, s.url, renewed.Token, jobproto.Hello{Agent: "c1", Labels: []string{"role=client"}}, nil)
	if err != nil {
		t.Fatalf("agent with the renewed token: %v", err)
	}
	defer a2.CloseNow()

	// Revoking the agent's subject ends the channel and every renewal.
	if st, b := s.api("POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"agent:c1","reason":"decommissioned","ttl":"24h"}`); st != 200 {
		t.Fatalf("revoke: %d %s", st, b)
	}
	var ce *client.CloseError
	if _, err := a2.Next(ctx); !errors.As(err, &ce) || ce.Code != 4003 {
		t.Fatalf("agent channel after revocation: %v, want close 4003", err)
	}
	for _, tok := range []string{e.Token, renewed.Token} {
		if st, b := s.api("POST", "/api/v1/account/token/refresh", tok, ""); st != 403 || errCode(b) != "token_revoked" {
			t.Fatalf("renew after revocation: %d %s", st, b)
		}
	}
	// Enrolling it again while revoked is refused, not a dead token.
	if st, _, b := s.enrol(operator, `{"id":"c1","ttl":"1h"}`); st != 409 || errCode(b) != "agent_revoked" {
		t.Fatalf("enrol a revoked agent: %d %s", st, b)
	}

	// The audit log has the enrolment (actor, agent, labels, token id)
	// and the renewal, never a token.
	_, b = s.api("GET", "/api/v1/audit?limit=1000", admin, "")
	if strings.Contains(string(b), e.Token) || strings.Contains(string(b), renewed.Token) {
		t.Fatal("a token is in the audit log")
	}
	var log struct {
		Events []struct {
			Actor, Action, Target string
			Detail                map[string]any
		}
	}
	json.Unmarshal(b, &log)
	var sawEnrol, sawRenew bool
	for _, ev := range log.Events {
		switch {
		case ev.Action == "agent.enrol" && ev.Actor == "olga" && ev.Target == "agent:c1" && ev.Detail["token_id"] == e.TokenID:
			labels, _ := json.Marshal(ev.Detail["labels"])
			sawEnrol = string(labels) == `["role=client","site=*"]`
		case ev.Action == "token.refresh" && ev.Actor == "agent:c1" && ev.Target == "token:"+e.TokenID:
			sawRenew = true
		}
	}
	if !sawEnrol || !sawRenew {
		t.Fatalf("audit (enrol %v, renew %v): %s", sawEnrol, sawRenew, b)
	}
	wait.For(t, "no agent channel", func() bool {
		_, b := s.api("GET", "/api/v1/agents", admin, "")
		return !strings.Contains(string(b), `"connected":true`)
	})
}

// TestDashboardEnrolAgent: the agents page offers the enrol form to an
// operator or admin, and the form's request (POST /ui/api/api/v1/agents/enrol
// with the session cookie) reaches the real API: the token comes back in the
// body only, and the audit log names the dashboard user.
func TestDashboardEnrolAgent(t *testing.T) {
	s := startServer(t, nil)
	b := browser(t)
	link, _, err := s.Dashboard().LoginLink() // an admin session
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := fetch(t, b, "GET", link, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login link: %d %s", resp.StatusCode, body)
	}
	if resp, body := fetch(t, b, "GET", s.url+"/ui/agents", ""); resp.StatusCode != 200 || !strings.Contains(body, `data-testid="enrol-form"`) {
		t.Fatalf("agents page: %d, enrol form %v", resp.StatusCode, strings.Contains(body, "enrol-form"))
	}
	req, _ := http.NewRequest("POST", s.url+"/ui/api/api/v1/agents/enrol", strings.NewReader(`{"id":"s1","labels":["role=server"],"ttl":"24h"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e enrolled
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 200 || e.Token == "" || e.Subject != "agent:s1" {
		t.Fatalf("enrol from the dashboard: %d %+v %v", resp.StatusCode, e, err)
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		t.Fatalf("the answer redirects (%s): the token must stay in the body", loc)
	}
	_, audit := s.api("GET", "/api/v1/audit?limit=1000", s.adminToken(), "")
	if !strings.Contains(string(audit), `"action":"agent.enrol","target":"agent:s1"`) || strings.Contains(string(audit), e.Token) {
		t.Fatalf("audit: %s", audit)
	}
}
