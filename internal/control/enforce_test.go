package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apispec/apispectest"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/jobs/agentlink"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/shell"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// node is one node's revocation path as the server wires it: a relay, the
// access endpoints (sessions, shell, agents) on a loopback listener, the
// in-memory revocations, the pending codes and an Enforcer on a shared bus.
// Its control Handler (recording) is served too.
type node struct {
	url   string
	key   *auth.Key
	rs    *relay.Server
	rev   *control.Revocations
	codes *access.MemoryCodeStore
	jobs  *jobs.Manager
	enf   *control.Enforcer
	lossy *lossyBus // set if the node's bus loses its revocation events
}

func startNode(t *testing.T, net *membus.Network, id string) *node {
	t.Helper()
	return startNodeWith(t, net, id, nodeOptions{})
}

// nodeOptions vary a test node.
type nodeOptions struct {
	// revocations, if set, records and logs the node's revocation changes
	// (a store shared with other nodes); nil: the node's own store.
	revocations store.Store
	// poll is the Enforcer's PollEvery (0: the default).
	poll time.Duration
	// loseRevocations: the bus loses every revocation event the node
	// publishes.
	loseRevocations bool
}

// lossyBus loses the revocation events published through it, as a bus
// that drops a message does: the publisher sees no error.
type lossyBus struct {
	cluster.Bus
	lost atomic.Uint64
}

func (b *lossyBus) Publish(m *cluster.Msg) error {
	if m.Subject == control.RevocationsSubject(cluster.DefaultPrefix) {
		b.lost.Add(1)
		return nil
	}
	return b.Bus.Publish(m)
}

func startNodeWith(t *testing.T, net *membus.Network, id string, opts nodeOptions) *node {
	t.Helper()
	ctx := context.Background()
	joined, err := net.Join(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { joined.Close() })
	var bus cluster.Bus = joined
	var lossy *lossyBus
	if opts.loseRevocations {
		lossy = &lossyBus{Bus: joined}
		bus = lossy
	}
	key, err := auth.NewHMACKey("HS256", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{key: key, rev: control.NewRevocations(nil), codes: access.NewMemoryCodeStore(0, nil), lossy: lossy}
	n.rs, err = relay.NewServer(relay.Config{PingInterval: -1, Denied: func(i *relay.Info) bool {
		_, denied := n.rev.Denied(i.BookingID, i.Subject, i.TokenID)
		return denied
	}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// Every request and answer is checked against the OpenAPI description.
	srv := httptest.NewServer(apispectest.New(t).Middleware(mux)) // 127.0.0.1:0
	n.url = srv.URL
	pub, _ := url.Parse(srv.URL)
	verifier := auth.NewVerifier(key, srv.URL, auth.VerifierOptions{})
	ah, err := access.New(access.Config{PublicURL: pub, NodeID: id, Verifier: verifier, Relay: n.rs, Codes: n.codes, Denier: n.rev})
	if err != nil {
		t.Fatal(err)
	}
	sh, err := shell.New(shell.Config{Access: ah, Relay: n.rs, AnswerTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "sb.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n.jobs, err = jobs.New(jobs.Config{Store: st, ResultsDir: filepath.Join(dir, "results"), NodeID: id, Publisher: n.rs}); err != nil {
		t.Fatal(err)
	}
	link, err := agentlink.NewLink(n.jobs, agentlink.LinkConfig{Denier: n.rev})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.jobs.Start(ctx, link); err != nil {
		t.Fatal(err)
	}
	agents, err := agentlink.New(link)
	if err != nil {
		t.Fatal(err)
	}
	if err := ah.Handle(wire.PrefixShell, sh); err != nil {
		t.Fatal(err)
	}
	if err := ah.Handle(wire.PrefixAgent, agents); err != nil {
		t.Fatal(err)
	}
	revStore := opts.revocations
	if revStore == nil {
		revStore = st
	}
	revision, err := control.LoadRevocations(ctx, revStore, n.rev, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n.enf, err = control.NewEnforcer(control.EnforcerConfig{Revocations: n.rev, Relay: n.rs, Codes: n.codes,
		Closers: []control.ConnCloser{sh, link}, Bus: bus, Log: revStore, Revision: revision, PollEvery: opts.poll})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	running := make(chan struct{})
	go func() { defer close(running); n.enf.Run(runCtx) }()
	ctl, err := control.New(control.Config{Store: revStore, Relay: n.rs, Revocations: n.rev, Enforcer: n.enf,
		Verifier: verifier, Key: key, Audience: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ah.Register(mux)
	ctl.Register(mux)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		srv.Close()
		stopRun()
		<-running
		n.rs.Shutdown(sctx)
		link.Stop(sctx)
		n.jobs.Stop(sctx)
		n.enf.Close()
		st.Close()
	})
	return n
}

// token signs a token for this node; prefix "" is an API token.
func (n *node) token(t *testing.T, prefix, topic, sub, booking string, scopes ...string) string {
	t.Helper()
	c := auth.NewClaims(n.url, time.Now(), time.Hour)
	c.Prefix, c.Topic, c.Subject, c.BookingID, c.Scopes = prefix, topic, sub, booking, scopes
	if prefix == wire.PrefixAgent {
		c.Agent = topic
	}
	tok, err := n.key.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (n *node) dial(t *testing.T, prefix, topic, tok string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.url, topic, tok, &client.Options{Prefix: prefix})
	if err != nil {
		t.Fatalf("dial %s/%s: %v", prefix, topic, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// api sends an API request to the node and returns the status.
func (n *node) api(t *testing.T, method, path, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(method, n.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// hasBooking reports whether the relay holds a connection of booking.
func (n *node) hasBooking(booking string) bool {
	for _, cs := range n.rs.Connections() {
		if cs.Info.BookingID == booking {
			return true
		}
	}
	return false
}

// readUntilClosed reads c until it is closed and returns the close code,
// skipping up to ten messages (an agent's welcome, a host's notices).
func readUntilClosed(t *testing.T, what string, c *client.Conn) wire.CloseCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	for range 10 {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce *client.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: %v, want a close with a code", what, err)
		}
		return ce.Code
	}
	t.Fatalf("%s: still open after ten messages", what)
	return 0
}

// TestRevocationRecordedOnOneNodeIsEnforcedOnAnother: a booking denied
// through node a's control API (recorded in a's store, enforced through
// a's Enforcer) closes, on node b, a session connection, a shell user
// waiting for its host and an agent's control channel of that booking with
// 4003, and deletes b's pending codes for it; b's admissions refuse it. A
// connection of another booking stays. Allowing the booking again on a
// lifts it on b.
func TestRevocationRecordedOnOneNodeIsEnforcedOnAnother(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := startNode(t, net, "a"), startNode(t, net, "b")

	// On b: a reader of booking b1 and one of b2.
	doomed := b.dial(t, wire.PrefixSession, "t1", b.token(t, wire.PrefixSession, "t1", "alice", "b1", auth.ScopeRead))
	b.dial(t, wire.PrefixSession, "t1", b.token(t, wire.PrefixSession, "t1", "bob", "b2", auth.ScopeRead))
	wait.For(t, "both readers on b's relay", func() bool { return b.hasBooking("b1") && b.hasBooking("b2") })
	// A pending code of b1.
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	pendingURI, err := client.Access(ctx, b.url, "t2", b.token(t, wire.PrefixSession, "t2", "alice", "b1", auth.ScopeRead), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A shell user of b1 waiting for its host, which does not answer.
	host := b.dial(t, wire.PrefixShell, "ssh", b.token(t, wire.PrefixShell, "ssh", "host", "host-booking", auth.ScopeHost))
	wait.For(t, "the shell host on b", func() bool { return b.rs.Readers("shell-host:ssh") == 1 })
	user := b.dial(t, wire.PrefixShell, "ssh", b.token(t, wire.PrefixShell, "ssh", "alice", "b1", auth.ScopeClient))
	if _, m, err := host.Read(ctx); err != nil || !strings.Contains(string(m), `"connect"`) {
		t.Fatalf("host's connect message: %s %v", m, err) // sent once the user's session is pending
	}
	// An agent of b1, registered.
	agent := b.dial(t, wire.PrefixAgent, "c1", b.token(t, wire.PrefixAgent, "c1", "agent-c1", "b1", auth.ScopeAgent))
	hello, _ := json.Marshal(jobproto.Hello{Type: jobproto.TypeHello, Agent: "c1"})
	if err := agent.Write(ctx, client.Text, hello); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "agent c1 registered on b", func() bool {
		list, _ := b.jobs.Agents(ctx)
		for _, ag := range list {
			if ag.ID == "c1" && ag.Connected {
				return true
			}
		}
		return false
	})
	if n := b.codes.Len(); n != 2 { // the pending code and the shell session's host-side code
		t.Fatalf("b holds %d codes before the revocation, want 2", n)
	}

	admin := a.token(t, "", "", "operator", "", auth.ScopeAdmin)
	exp := time.Now().Add(time.Hour).Unix()
	if status := a.api(t, "POST", fmt.Sprintf("/bids/deny?bid=b1&exp=%d", exp), admin); status != http.StatusNoContent {
		t.Fatalf("deny on a: %d", status)
	}

	for what, c := range map[string]*client.Conn{"session reader": doomed, "shell user waiting for its host": user, "agent channel": agent} {
		if code := readUntilClosed(t, "b's "+what, c); code != wire.CloseDenied {
			t.Fatalf("b's %s closed with %d, want %d", what, code, wire.CloseDenied)
		}
	}
	wait.For(t, "b's pending codes of b1 deleted", func() bool { return b.codes.Len() == 0 })
	if _, denied := b.rev.Denied("b1", "", ""); !denied {
		t.Fatal("b does not deny b1")
	}
	if _, err := client.DialURI(ctx, pendingURI, nil); err == nil {
		t.Fatal("b admitted a code issued for b1 before the revocation")
	}
	if c, err := client.Dial(ctx, b.url, "t1", b.token(t, wire.PrefixSession, "t1", "alice", "b1", auth.ScopeRead), nil); err == nil {
		c.CloseNow()
		t.Fatal("b admitted b1 after the revocation")
	}
	if !b.hasBooking("b2") {
		t.Fatal("b closed a connection of another booking")
	}
	if st := b.enf.Stats(); st.Applied != 1 || st.Ignored["bad_json"]+st.Ignored["invalid"] != 0 || st.Published != 0 {
		t.Fatalf("b's enforcer: %+v, want one applied event of a's, nothing published", st)
	}
	if st := a.enf.Stats(); st.Applied != 1 || st.Published != 1 {
		t.Fatalf("a's enforcer: %+v, want its own change applied and published", st)
	}

	if status := a.api(t, "POST", fmt.Sprintf("/bids/allow?bid=b1&exp=%d", exp), admin); status != http.StatusNoContent {
		t.Fatalf("allow on a: %d", status)
	}
	wait.For(t, "b allows b1 again", func() bool {
		_, denied := b.rev.Denied("b1", "", "")
		allows := b.rev.Allowances()
		return !denied && len(allows) == 1 && allows[0].BookingID == "b1" && allows[0].Actor == "operator"
	})
	b.dial(t, wire.PrefixSession, "t1", b.token(t, wire.PrefixSession, "t1", "alice", "b1", auth.ScopeRead))
}

// TestRevocationEventsThatCannotBeAppliedAreIgnored: an event that is not
// JSON, or names an unknown op or kind, an empty or oversized value, or
// lacks its expiry, changes nothing and is counted; the next valid event
// is applied, and a gap in a node's sequence is counted as missed.
func TestRevocationEventsThatCannotBeAppliedAreIgnored(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := startNode(t, net, "b")
	x, err := net.Join("x")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	subject := control.RevocationsSubject(cluster.DefaultPrefix)
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	publish := func(body string) {
		t.Helper()
		if err := x.Publish(&cluster.Msg{Subject: subject, Data: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	badJSON := []string{
		`not json`,
		`[]`,
		`{"op":"revoke","kind":"booking","value":"v","expires_at":"tomorrow"}`,
	}
	invalid := []string{
		`{"op":"revoke","kind":"label","value":"v","expires_at":"` + exp + `"}`,
		`{"op":"explode","kind":"booking","value":"v","expires_at":"` + exp + `"}`,
		`{"op":"revoke","kind":"booking","value":"","expires_at":"` + exp + `"}`,
		`{"op":"revoke","kind":"booking","value":"v"}`,
		`{"op":"revoke","kind":"booking","value":"` + strings.Repeat("v", 300) + `","expires_at":"` + exp + `"}`,
		`{"op":"unrevoke","kind":"subject","value":"v","allow":true,"expires_at":"` + exp + `"}`,
		`{}`,
	}
	for _, body := range append(badJSON, invalid...) {
		publish(body)
	}
	// A valid event from x, with a field this node does not know; the bus
	// keeps x's order, so once it is applied every event above was handled.
	publish(`{"op":"revoke","kind":"subject","value":"mallory","expires_at":"` + exp + `","node":"x","seq":7,"future_field":1}`)
	wait.For(t, "the valid event applied", func() bool { return b.enf.Stats().Applied == 1 })
	st := b.enf.Stats()
	if st.Ignored["bad_json"] != uint64(len(badJSON)) || st.Ignored["invalid"] != uint64(len(invalid)) {
		t.Fatalf("ignored %v, want bad_json %d and invalid %d", st.Ignored, len(badJSON), len(invalid))
	}
	if l := b.rev.List(""); len(l) != 1 || l[0].Kind != store.RevokeSubject || l[0].Value != "mallory" {
		t.Fatalf("revocations after the events: %+v, want mallory's only", l)
	}
	if st.Missed != 0 {
		t.Fatalf("missed %d events of x before its first", st.Missed)
	}
	publish(`{"op":"unrevoke","kind":"subject","value":"mallory","node":"x","seq":9}`)
	wait.For(t, "the unrevoke applied", func() bool { return b.enf.Stats().Applied == 2 })
	if _, denied := b.rev.Denied("", "mallory", ""); denied {
		t.Fatal("mallory still denied after the unrevoke")
	}
	if st := b.enf.Stats(); st.Missed != 1 {
		t.Fatalf("missed %d events, want 1 (x's seq went from 7 to 9)", st.Missed)
	}
}
