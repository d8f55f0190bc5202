package agentlink

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// TestAuthorize: the channel needs scope agent and an agent claim naming
// the topic, a single segment; it may then read, write and claim the
// token's labels.
func TestAuthorize(t *testing.T) {
	e, err := New(acceptorFunc(func(relay.Conn, jobs.AgentGrant) {}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		claims auth.Claims
		topic  string
		status int
		code   wire.ErrorCode
	}{
		{"ok", auth.Claims{Scopes: []string{auth.ScopeAgent}, Agent: "c1", Labels: []string{"site=a"}}, "c1", 0, ""},
		{"no scope agent", auth.Claims{Scopes: []string{auth.ScopeRead}, Agent: "c1"}, "c1", http.StatusForbidden, wire.ErrorScopeForbidden},
		{"another agent", auth.Claims{Scopes: []string{auth.ScopeAgent}, Agent: "c2"}, "c1", http.StatusForbidden, wire.ErrorAgentForbidden},
		{"two segments", auth.Claims{Scopes: []string{auth.ScopeAgent}, Agent: "c1/x"}, "c1/x", http.StatusBadRequest, wire.ErrorInvalidTopic},
	} {
		p, err := e.Authorize(&tc.claims, tc.topic)
		switch {
		case tc.status == 0 && (err != nil || !p.CanRead || !p.CanWrite || len(p.Labels) != 1 || p.Labels[0] != "site=a"):
			t.Errorf("%s: %+v %v", tc.name, p, err)
		case tc.status != 0 && (err == nil || err.Status != tc.status || err.Code != string(tc.code)):
			t.Errorf("%s: %v, want %d %s", tc.name, err, tc.status, tc.code)
		}
	}
}

// TestServeHandsOver: Serve gives the channel to the Acceptor with the
// grant's identity and the request's address.
func TestServeHandsOver(t *testing.T) {
	var got jobs.AgentGrant
	e, err := New(acceptorFunc(func(_ relay.Conn, g jobs.AgentGrant) { got = g }))
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Unix(1_900_000_000, 0)
	e.Serve(context.Background(), nil, access.Grant{Topic: "c1", Prefix: wire.PrefixAgent, Labels: []string{"site=a"},
		Identity: relay.Identity{Subject: "agent-c1", BookingID: "b1", TokenID: "j1"}, TokenExpiry: exp},
		relay.Info{RemoteAddr: "192.0.2.1:5", UserAgent: "agent/1"})
	want := jobs.AgentGrant{ID: "c1", Labels: []string{"site=a"}, Subject: "agent-c1", BookingID: "b1", TokenID: "j1",
		TokenExpiry: exp, RemoteAddr: "192.0.2.1:5", UserAgent: "agent/1"}
	if got.ID != want.ID || len(got.Labels) != 1 || got.Labels[0] != "site=a" || got.Subject != want.Subject || got.BookingID != want.BookingID ||
		got.TokenID != want.TokenID || !got.TokenExpiry.Equal(exp) || got.RemoteAddr != want.RemoteAddr || got.UserAgent != want.UserAgent {
		t.Fatalf("handed over %+v, want %+v", got, want)
	}
	if _, err := New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
}

type acceptorFunc func(relay.Conn, jobs.AgentGrant)

func (f acceptorFunc) AcceptAgent(c relay.Conn, g jobs.AgentGrant) { f(c, g) }
