package access

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// probeEndpoint is a connection type of the tests' own, registered as
// "probe": a token with scope write may write, and is given role "writer"
// and the token's labels; a token with only scope read is refused by the
// Handler (a Permit with neither read nor write). It echoes every message
// and reports each connection it serves.
type probeEndpoint struct {
	served chan Grant // each served connection's grant
}

func (p *probeEndpoint) Authorize(c *auth.Claims, topic string) (Permit, *apierr.Error) {
	if strings.HasPrefix(topic, "forbidden") {
		return Permit{}, apierr.New(http.StatusForbidden, "probe_forbidden", "the probe refuses this topic")
	}
	return Permit{CanWrite: c.HasScope(auth.ScopeWrite), Role: "writer", Labels: c.Labels}, nil
}

func (p *probeEndpoint) Serve(_ context.Context, conn relay.Conn, g Grant, info relay.Info) {
	if info.RemoteAddr == "" || info.Topic != g.Topic || info.Prefix != "probe" {
		_ = conn.Close(relay.ClosePolicy, "bad info")
		return
	}
	p.served <- g
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			conn.Abort()
			return
		}
		if err := conn.WriteMessages([]relay.Message{{Type: typ, Data: data}}, time.Now().Add(5*time.Second)); err != nil {
			conn.Abort()
			return
		}
	}
}

// admittingProbe is a probeEndpoint that is also an Admitter: it refuses
// the topic "closed" at the exchange, and counts admissions and cancels.
type admittingProbe struct {
	probeEndpoint
	closed            atomic.Bool // refuse every exchange
	admits, cancels   atomic.Int64
	lastAdmittedGrant atomic.Pointer[Grant]
}

func (p *admittingProbe) Admit(g Grant) (Admission, *apierr.Error) {
	if p.closed.Load() {
		return Admission{}, apierr.New(http.StatusGone, "probe_closed", "the probe closed")
	}
	p.admits.Add(1)
	p.lastAdmittedGrant.Store(&g)
	return Admission{Cancel: func() { p.cancels.Add(1) }}, nil
}

// fakeDenier revokes bookings on demand.
type fakeDenier struct {
	mu     sync.Mutex
	denied map[string]bool // guarded by mu; booking ids
}

func (d *fakeDenier) deny(booking string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.denied == nil {
		d.denied = map[string]bool{}
	}
	d.denied[booking] = true
}

func (d *fakeDenier) Denied(bookingID, subject, tokenID string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return "booking", d.denied[bookingID]
}

type registryFixture struct {
	h      *Handler
	key    *auth.Key
	pub    *url.URL
	denier *fakeDenier
}

// startRegistry serves a Handler on a loopback port, with these limits,
// configured further by each configure function.
func startRegistry(t *testing.T, perToken, perSubject int, configure ...func(*Config)) *registryFixture {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	pub, _ := url.Parse("http://" + ts.Listener.Addr().String())
	key, err := auth.NewHMACKey("HS256", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := relay.NewServer(relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDenier{}
	cfg := Config{PublicURL: pub, NodeID: "n1", Verifier: auth.NewVerifier(key, pub.String(), auth.VerifierOptions{}),
		Relay: rs, Denier: d, MaxConnsPerToken: perToken, MaxConnsPerSubject: perSubject}
	for _, f := range configure {
		f(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	ts.Config.Handler = mux
	ts.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rs.Shutdown(ctx)
		ts.CloseClientConnections()
		ts.Close()
	})
	return &registryFixture{h: h, key: key, pub: pub, denier: d}
}

func (f *registryFixture) token(t *testing.T, prefix, topic, subject, booking string, scopes ...string) string {
	t.Helper()
	c := auth.NewClaims(f.pub.String(), time.Now(), time.Hour)
	c.Topic, c.Prefix, c.Scopes, c.Subject, c.BookingID, c.Labels = topic, prefix, scopes, subject, booking, []string{"site=a"}
	tok, err := f.key.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// post asks for a code; it returns the status, the error code ("" on
// success) and the URI.
func (f *registryFixture) post(t *testing.T, path, token string) (status int, code, uri string) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.pub.String()+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		URI   string                `json:"uri"`
		Error struct{ Code string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("POST %s: %d, body not JSON: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode, body.Error.Code, body.URI
}

// dial opens uri; on an HTTP refusal it returns the status and error code.
func dial(t *testing.T, uri string) (c *websocket.Conn, status int, code string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, uri, nil)
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
		return c, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", uri, err)
	}
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return nil, resp.StatusCode, body.Error.Code
}

// TestHandleRegistry: prefixes are names, registered once; session is
// built in; KnownPrefix consults the registry.
func TestHandleRegistry(t *testing.T) {
	f := startRegistry(t, 0, 0)
	if !f.h.KnownPrefix(wire.PrefixSession) {
		t.Error("session is not built in")
	}
	if f.h.KnownPrefix("probe") || f.h.KnownPrefix(wire.PrefixShell) || f.h.KnownPrefix(wire.PrefixAgent) {
		t.Error("a prefix nobody registered is known")
	}
	for _, bad := range []string{"", "Probe", "a/b", "a b", strings.Repeat("p", 33)} {
		if err := f.h.Handle(bad, &probeEndpoint{}); err == nil {
			t.Errorf("Handle(%q) accepted an invalid prefix", bad)
		}
	}
	if err := f.h.Handle(wire.PrefixSession, &probeEndpoint{}); err == nil {
		t.Error("Handle replaced the built-in session endpoint")
	}
	if err := f.h.Handle("probe", nil); err == nil {
		t.Error("Handle accepted a nil endpoint")
	}
	if err := f.h.Handle("probe", &probeEndpoint{}); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Handle("probe", &probeEndpoint{}); err == nil {
		t.Error("Handle registered a prefix twice")
	}
	if !f.h.KnownPrefix("probe") {
		t.Error("a registered prefix is unknown")
	}
}

// TestUnknownPrefix: a prefix nobody registered is 404 unknown_prefix at the
// access endpoint and at the websocket endpoint, until it is registered.
func TestUnknownPrefix(t *testing.T) {
	f := startRegistry(t, 0, 0)
	tok := f.token(t, "probe", "t1", "alice", "b1", auth.ScopeWrite)
	if status, code, _ := f.post(t, "/probe/t1", tok); status != http.StatusNotFound || code != string(wire.ErrorUnknownPrefix) {
		t.Fatalf("POST to an unregistered prefix: %d %s, want 404 unknown_prefix", status, code)
	}
	wsBase := "ws" + strings.TrimPrefix(f.pub.String(), "http")
	if _, status, code := dial(t, wsBase+"/probe/t1?code=x"); status != http.StatusNotFound || code != string(wire.ErrorUnknownPrefix) {
		t.Fatalf("websocket to an unregistered prefix: %d %s, want 404 unknown_prefix", status, code)
	}
	if err := f.h.Handle("probe", &probeEndpoint{served: make(chan Grant, 1)}); err != nil {
		t.Fatal(err)
	}
	if status, code, _ := f.post(t, "/probe/t1", tok); status != http.StatusOK {
		t.Fatalf("POST to a registered prefix: %d %s", status, code)
	}
}

// TestCustomEndpoint: a registered endpoint decides what a token may do
// (its Permit reaches Serve in the grant), and serves the upgraded
// connection; the Handler's own checks (prefix claim, a Permit with no
// right) apply to it as to every endpoint.
func TestCustomEndpoint(t *testing.T) {
	f := startRegistry(t, 0, 0)
	p := &probeEndpoint{served: make(chan Grant, 1)}
	if err := f.h.Handle("probe", p); err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name, path, token string
		status            int
		code              string
	}{
		{"token for another prefix", "/probe/t1", f.token(t, wire.PrefixSession, "t1", "alice", "b1", auth.ScopeWrite), http.StatusForbidden, string(wire.ErrorPrefixForbidden)},
		{"permit with no right", "/probe/t1", f.token(t, "probe", "t1", "alice", "b1", auth.ScopeRead), http.StatusForbidden, string(wire.ErrorScopeForbidden)},
		{"endpoint's refusal", "/probe/forbidden", f.token(t, "probe", "*", "alice", "b1", auth.ScopeWrite), http.StatusForbidden, "probe_forbidden"},
		{"topic not granted", "/probe/t2", f.token(t, "probe", "t1", "alice", "b1", auth.ScopeWrite), http.StatusForbidden, string(wire.ErrorTopicForbidden)},
	}
	for _, r := range refusals {
		if status, code, _ := f.post(t, r.path, r.token); status != r.status || code != r.code {
			t.Errorf("%s: %d %s, want %d %s", r.name, status, code, r.status, r.code)
		}
	}

	status, code, uri := f.post(t, "/probe/t1", f.token(t, "probe", "t1", "alice", "b1", auth.ScopeWrite))
	if status != http.StatusOK {
		t.Fatalf("POST: %d %s", status, code)
	}
	c, status, code := dial(t, uri)
	if c == nil {
		t.Fatalf("dial: %d %s", status, code)
	}
	g := <-p.served
	if g.Prefix != "probe" || g.Topic != "t1" || !g.CanWrite || g.CanRead || g.Role != "writer" ||
		len(g.Labels) != 1 || g.Labels[0] != "site=a" || g.Subject != "alice" || g.BookingID != "b1" || g.Peer {
		t.Fatalf("served grant %+v", g)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, m, err := c.Read(ctx); err != nil || string(m) != "ping" {
		t.Fatalf("echo: %q %v", m, err)
	}
}

// TestCustomEndpointLimits: the connection limits per token and subject
// hold for a registered endpoint as for sessions, at the access request and
// at the exchange (where the endpoint's admission is cancelled); a closed
// connection gives its place back; a peer's connection (IssuePeer) is not
// counted again.
func TestCustomEndpointLimits(t *testing.T) {
	f := startRegistry(t, 1, 2)
	p := &admittingProbe{probeEndpoint: probeEndpoint{served: make(chan Grant, 4)}}
	if err := f.h.Handle("probe", p); err != nil {
		t.Fatal(err)
	}
	tok := f.token(t, "probe", "*", "alice", "b1", auth.ScopeWrite)
	// Two codes while no connection is open; the second exchange is over
	// the token's limit once the first is in.
	_, _, uri1 := f.post(t, "/probe/t1", tok)
	_, _, uri2 := f.post(t, "/probe/t2", tok)
	c1, status, code := dial(t, uri1)
	if c1 == nil {
		t.Fatalf("first connection: %d %s", status, code)
	}
	<-p.served
	if status, code, _ := f.post(t, "/probe/t3", tok); status != http.StatusTooManyRequests || code != string(wire.ErrorTooManyConnections) {
		t.Fatalf("access request over the token's limit: %d %s, want 429 too_many_connections", status, code)
	}
	if c, status, code := dial(t, uri2); c != nil || status != http.StatusTooManyRequests || code != string(wire.ErrorTooManyConnections) {
		t.Fatalf("exchange over the token's limit: %d %s, want 429 too_many_connections", status, code)
	}
	if p.admits.Load() != 2 || p.cancels.Load() != 1 {
		t.Fatalf("admits %d, cancels %d; want 2 and 1 (the refused exchange's admission cancelled)", p.admits.Load(), p.cancels.Load())
	}

	// A peer's code for the open connection's other side is admitted
	// although the token is at its limit.
	peer := *p.lastAdmittedGrant.Load()
	peer.Topic = "t1-peer"
	peerURI, err := f.h.IssuePeer(peer)
	if err != nil {
		t.Fatal(err)
	}
	if c, status, code := dial(t, peerURI); c == nil {
		t.Fatalf("peer connection at the token's limit: %d %s, want admitted", status, code)
	}
	if g := <-p.served; !g.Peer || g.Topic != "t1-peer" {
		t.Fatalf("peer grant %+v", g)
	}

	// Another token of the same subject: the subject's limit (2) counts
	// the first connection, not the peer's.
	other := f.token(t, "probe", "*", "alice", "b1", auth.ScopeWrite)
	if status, code, _ := f.post(t, "/probe/t4", other); status != http.StatusOK {
		t.Fatalf("second token of the subject: %d %s", status, code)
	}

	// The first connection ends: its token may connect again.
	c1.Close(websocket.StatusNormalClosure, "")
	wait.For(t, "the closed connection's place given back", func() bool {
		status, _, _ := f.post(t, "/probe/t5", tok)
		return status == http.StatusOK
	})
}

// TestCustomEndpointRevocation: a revoked booking is refused at the access
// request of a registered endpoint, and at the exchange of a code issued
// before the revocation, before the endpoint is asked to admit or serve.
func TestCustomEndpointRevocation(t *testing.T) {
	f := startRegistry(t, 0, 0)
	p := &admittingProbe{probeEndpoint: probeEndpoint{served: make(chan Grant, 1)}}
	if err := f.h.Handle("probe", p); err != nil {
		t.Fatal(err)
	}
	_, _, uri := f.post(t, "/probe/t1", f.token(t, "probe", "t1", "bob", "b-bob", auth.ScopeWrite))
	if uri == "" {
		t.Fatal("no code before the revocation")
	}
	f.denier.deny("b-bob")
	if status, code, _ := f.post(t, "/probe/t1", f.token(t, "probe", "t1", "bob", "b-bob", auth.ScopeWrite)); status != http.StatusForbidden || code != string(wire.ErrorBookingDenied) {
		t.Fatalf("access request of a revoked booking: %d %s, want 403 booking_denied", status, code)
	}
	if c, status, code := dial(t, uri); c != nil || status != http.StatusForbidden || code != string(wire.ErrorBookingDenied) {
		t.Fatalf("exchange of a revoked booking's code: %d %s, want 403 booking_denied", status, code)
	}
	if p.admits.Load() != 0 || len(p.served) != 0 {
		t.Fatalf("the endpoint was asked to admit (%d) or serve (%d) a revoked booking", p.admits.Load(), len(p.served))
	}
}

// TestAdmitRefusal: an Admitter's refusal is the exchange's HTTP error, and
// nothing is counted against the limits for it.
func TestAdmitRefusal(t *testing.T) {
	f := startRegistry(t, 1, 1)
	p := &admittingProbe{probeEndpoint: probeEndpoint{served: make(chan Grant, 1)}}
	if err := f.h.Handle("probe", p); err != nil {
		t.Fatal(err)
	}
	tok := f.token(t, "probe", "*", "carol", "b-carol", auth.ScopeWrite)
	_, _, uri := f.post(t, "/probe/t1", tok)
	p.closed.Store(true)
	if c, status, code := dial(t, uri); c != nil || status != http.StatusGone || code != "probe_closed" {
		t.Fatalf("exchange the endpoint refuses: %d %s, want 410 probe_closed", status, code)
	}
	p.closed.Store(false)
	_, _, uri = f.post(t, "/probe/t1", tok)
	if c, status, code := dial(t, uri); c == nil {
		t.Fatalf("after a refused exchange: %d %s, want admitted (no place was taken)", status, code)
	}
}
