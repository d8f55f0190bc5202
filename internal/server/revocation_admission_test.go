package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestRevocationClosesAgentWaitingForHello: an agent that redeemed its code
// before a revocation of its subject, and sends its hello after it, is
// closed with 4003 and never registered (it used to survive: the revocation
// closed only agents that had already said hello).
func TestRevocationClosesAgentWaitingForHello(t *testing.T) {
	s := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	early, err := client.Dial(ctx, s.url, "c1", s.agentToken("c1"), &client.Options{Prefix: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	defer early.CloseNow()
	status, body := s.api("POST", "/api/v1/revocations", s.adminToken(), `{"kind":"subject","value":"agent-c1","reason":"retired","ttl":"1h"}`)
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("revoke: %d %s", status, body)
	}
	hello, _ := json.Marshal(jobproto.Hello{Type: jobproto.TypeHello, Agent: "c1"})
	early.Write(ctx, client.Text, hello) // may fail: the channel may be closed already
	var ce *client.CloseError
	for range 10 { // the welcome, had it been registered, comes first
		_, m, err := early.Read(ctx)
		if err != nil {
			if !errors.As(err, &ce) || ce.Code != 4003 {
				t.Fatalf("agent waiting for hello at revocation: %v, want close 4003", err)
			}
			break
		}
		if strings.Contains(string(m), `"welcome"`) {
			t.Fatalf("revoked agent was welcomed: %s", m)
		}
	}
	_, b := s.api("GET", "/api/v1/agents", s.userToken("alice", auth.ScopeJobsRead), "")
	if strings.Contains(string(b), `"id":"c1","connected":true`) {
		t.Fatalf("revoked agent registered: %s", b)
	}
}

// TestRevocationClosesShellUserWaitingForHost: a shell user whose host has
// not yet dialled the session is closed with 4003 by a revocation of the
// user's booking, at once, not left to wait for the host.
func TestRevocationClosesShellUserWaitingForHost(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.ShellAnswerTimeout = time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctl, err := s.dialShell("ssh", s.shellToken("ssh", auth.ScopeHost))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, "host registered", func() bool { return s.Relay().Readers("shell-host:ssh") == 1 })
	uc := s.claims("ssh", auth.ScopeClient)
	uc.Prefix, uc.BookingID = "shell", "b-user"
	user, err := s.dialShell("ssh", s.sign(uc))
	if err != nil {
		t.Fatal(err)
	}
	m := nextConnect(t, ctl) // the session is pending: the host does not dial it
	status, body := s.api("POST", "/bids/deny?bid=b-user&exp="+strconv.FormatInt(s.clock.Now().Add(time.Hour).Unix(), 10), s.adminToken(), "")
	if status != http.StatusNoContent {
		t.Fatalf("deny: %d %s", status, body)
	}
	var ce *client.CloseError
	if _, _, err := user.Read(ctx); !errors.As(err, &ce) || ce.Code != 4003 {
		t.Fatalf("shell user waiting for its host at revocation: %v, want close 4003", err)
	}
	// The host's side of the session can no longer be admitted.
	hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
	defer hcancel()
	if hs, err := client.DialURI(hctx, m.URI, nil); err == nil {
		hs.CloseNow()
		t.Fatal("host side of a revoked session was admitted")
	}
}
