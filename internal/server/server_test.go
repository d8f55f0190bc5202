package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/apispec/apispectest"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// clock is a test clock: real time plus an offset the test can move.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// openStore opens the SQLite store in dir, closed when the test ends.
func openStore(t *testing.T, dir string) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "switchboard.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

type testServer struct {
	*Server
	t     *testing.T
	url   string
	clock *clock
	key   *auth.Key
}

func startServer(t *testing.T, mod func(*Config, *Deps)) *testServer {
	t.Helper()
	clk := &clock{}
	cfg := Config{Listen: "127.0.0.1:0", Secret: testSecret, NodeID: "n1", Relay: relay.Config{PingInterval: -1}}
	// Every request and answer is checked against the OpenAPI description.
	deps := Deps{Now: clk.Now, Middleware: apispectest.New(t).Middleware}
	if mod != nil {
		mod(&cfg, &deps)
	}
	if deps.Store == nil {
		deps.Store = openStore(t, t.TempDir())
	}
	if cfg.ResultsDir == "" {
		cfg.ResultsDir = t.TempDir()
	}
	s, err := New(cfg, deps)
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	key, _ := auth.NewHMACKey("HS256", testSecret)
	return &testServer{Server: s, t: t, url: s.PublicURL(), clock: clk, key: key}
}

func (s *testServer) claims(topic string, scopes ...string) auth.Claims {
	now := s.clock.Now()
	return auth.Claims{
		Topic: topic, Prefix: "session", Scopes: scopes, BookingID: "b1",
		RegisteredClaims: jwt.RegisteredClaims{
			Audience:  jwt.ClaimStrings{s.url},
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
		},
	}
}

func (s *testServer) sign(c auth.Claims) string {
	tok, err := s.key.Sign(c)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

func (s *testServer) token(topic string, scopes ...string) string {
	return s.sign(s.claims(topic, scopes...))
}

func (s *testServer) dial(topic, tok string) *client.Conn {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.url, topic, tok, nil)
	if err != nil {
		s.t.Fatalf("dial %s: %v", topic, err)
	}
	s.t.Cleanup(func() { c.CloseNow() })
	return c
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// do sends a request and returns status and error code (or uri on success).
func do(t *testing.T, req *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent {
		var ok struct {
			URI string `json:"uri"`
		}
		json.Unmarshal(body, &ok)
		return resp.StatusCode, ok.URI, resp.Header
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("status %d with Content-Type %q, want JSON: %s", resp.StatusCode, ct, body)
	}
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("status %d: body is not a JSON error: %s", resp.StatusCode, body)
	}
	return resp.StatusCode, e.Error.Code, resp.Header
}

func TestAccessBadInput(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.AllowedOrigins = []string{"https://lab.example"} })
	now := s.clock.Now()
	mod := func(f func(*auth.Claims)) string { c := s.claims("demo", "read", "write"); f(&c); return s.sign(c) }
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rs256, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, s.claims("demo", "read")).SignedString(rsaKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256, _ := jwt.NewWithClaims(jwt.SigningMethodES256, s.claims("demo", "read")).SignedString(ecKey)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, s.claims("demo", "read")).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs512Key, _ := auth.NewHMACKey("HS512", testSecret)
	hs512, _ := hs512Key.Sign(s.claims("demo", "read"))
	otherKey, _ := auth.NewHMACKey("HS256", []byte("some other secret, long enough"))
	badSig, _ := otherKey.Sign(s.claims("demo", "read"))
	good := s.token("demo", "read", "write")

	cases := []struct {
		name   string
		path   string
		auth   []string // Authorization header values
		origin string
		status int
		code   string // error code, or "" for success
	}{
		{"bearer", "/session/demo", []string{"Bearer " + good}, "", 200, ""},
		{"bare token as practable sends", "/session/demo", []string{good}, "", 200, ""},
		{"lower-case scheme", "/session/demo", []string{"bearer " + good}, "", 200, ""},
		{"pattern token", "/session/expt42/video", []string{s.token("expt42/*", "read")}, "", 200, ""},
		{"allowed origin", "/session/demo", []string{good}, "https://lab.example", 200, ""},
		{"own origin", "/session/demo", []string{good}, s.url, 200, ""},
		{"missing authorization", "/session/demo", nil, "", 401, "missing_token"},
		{"empty authorization", "/session/demo", []string{""}, "", 401, "missing_token"},
		{"two authorization headers", "/session/demo", []string{good, good}, "", 400, "malformed_authorization"},
		{"oversized authorization", "/session/demo", []string{"Bearer " + strings.Repeat("a", 9000)}, "", 400, "authorization_too_large"},
		{"basic scheme", "/session/demo", []string{"Basic dXNlcjpwYXNz"}, "", 400, "malformed_authorization"},
		{"bearer without token", "/session/demo", []string{"Bearer "}, "", 400, "malformed_authorization"},
		{"bearer with two tokens", "/session/demo", []string{"Bearer a b"}, "", 400, "malformed_authorization"},
		{"malformed jwt", "/session/demo", []string{"Bearer not.a.jwt"}, "", 401, "token_malformed"},
		{"garbage", "/session/demo", []string{"Bearer %%%"}, "", 401, "token_malformed"},
		{"alg none", "/session/demo", []string{none}, "", 401, "token_algorithm_refused"},
		{"alg RS256", "/session/demo", []string{rs256}, "", 401, "token_algorithm_refused"},
		{"alg ES256", "/session/demo", []string{es256}, "", 401, "token_algorithm_refused"},
		{"alg HS512 when HS256 configured", "/session/demo", []string{hs512}, "", 401, "token_algorithm_refused"},
		{"bad signature", "/session/demo", []string{badSig}, "", 401, "token_signature_invalid"},
		{"expired", "/session/demo", []string{mod(func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute)) })}, "", 401, "token_expired"},
		{"not yet valid", "/session/demo", []string{mod(func(c *auth.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) })}, "", 401, "token_not_yet_valid"},
		{"wrong audience", "/session/demo", []string{mod(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"https://other.example"} })}, "", 401, "token_wrong_audience"},
		{"audience with trailing slash", "/session/demo", []string{mod(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{s.url + "/"} })}, "", 200, ""},
		{"missing exp", "/session/demo", []string{mod(func(c *auth.Claims) { c.ExpiresAt = nil })}, "", 401, "token_missing_claim"},
		{"missing topic", "/session/demo", []string{mod(func(c *auth.Claims) { c.Topic = "" })}, "", 401, "token_missing_claim"},
		{"missing scopes", "/session/demo", []string{mod(func(c *auth.Claims) { c.Scopes = nil })}, "", 401, "token_missing_claim"},
		{"missing prefix", "/session/demo", []string{mod(func(c *auth.Claims) { c.Prefix = "" })}, "", 401, "token_missing_claim"},
		{"token topic violates grammar", "/session/demo", []string{mod(func(c *auth.Claims) { c.Topic = "a b" })}, "", 401, "token_invalid_claim"},
		{"topic mismatch", "/session/other", []string{good}, "", 403, "topic_forbidden"},
		{"pattern does not cover parent", "/session/expt42", []string{s.token("expt42/*", "read")}, "", 403, "topic_forbidden"},
		{"prefix mismatch", "/session/demo", []string{mod(func(c *auth.Claims) { c.Prefix = "shell" })}, "", 403, "prefix_forbidden"},
		{"no read or write scope", "/session/demo", []string{s.token("demo", "relay:stats")}, "", 403, "scope_forbidden"},
		{"path topic violates grammar", "/session/a%20b", []string{good}, "", 400, "invalid_topic"},
		{"path topic too long", "/session/" + strings.Repeat("a", 65), []string{good}, "", 400, "invalid_topic"},
		{"path with empty segment", "/session/a//b", []string{good}, "", 400, "invalid_path"},
		{"path with dot-dot", "/session/a/../b", []string{good}, "", 400, "invalid_path"},
		{"trailing slash", "/session/demo/", []string{good}, "", 400, "invalid_topic"},
		{"unknown prefix", "/nosuch/demo", []string{good}, "", 404, "unknown_prefix"},
		{"forbidden origin", "/session/demo", []string{good}, "https://evil.example", 403, "origin_forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.url+tc.path, nil)
			for _, a := range tc.auth {
				req.Header.Add("Authorization", a)
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			status, got, hdr := do(t, req)
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d %s", status, got, tc.status, tc.code)
			}
			if tc.code != "" && got != tc.code {
				t.Fatalf("code %q, want %q", got, tc.code)
			}
			if tc.code == "" {
				if !strings.HasPrefix(got, "ws://") || !strings.Contains(got, "?code=") || !strings.HasSuffix(got, ".n1") {
					t.Fatalf("uri %q", got)
				}
				if tc.origin != "" && hdr.Get("Access-Control-Allow-Origin") != tc.origin {
					t.Fatalf("CORS header %q", hdr.Get("Access-Control-Allow-Origin"))
				}
			}
			if status == 401 && hdr.Get("WWW-Authenticate") == "" && tc.code != "missing_token" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

func TestPreflight(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.AllowedOrigins = []string{"https://lab.example"} })
	for _, tc := range []struct {
		origin string
		status int
	}{{"https://lab.example", 204}, {"https://evil.example", 403}, {"", 403}} {
		req, _ := http.NewRequest(http.MethodOptions, s.url+"/session/demo", nil)
		req.Header.Set("Access-Control-Request-Method", "POST")
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		status, _, hdr := do(t, req)
		if status != tc.status {
			t.Fatalf("origin %q: status %d, want %d", tc.origin, status, tc.status)
		}
		if status == 204 && (hdr.Get("Access-Control-Allow-Origin") != tc.origin || !strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "Authorization")) {
			t.Fatalf("preflight headers %v", hdr)
		}
	}
}

// access returns a fresh websocket URI with a code.
func (s *testServer) access(topic, tok string) string {
	s.t.Helper()
	uri, err := client.Access(context.Background(), s.url, topic, tok, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return uri
}

// wsStatus tries a websocket handshake on uri and returns the HTTP status
// and error code of the refusal.
func wsStatus(t *testing.T, uri string, header http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialURI(ctx, uri, &client.Options{Header: header})
	if err == nil {
		c.CloseNow()
		return http.StatusSwitchingProtocols, ""
	}
	var ae *client.AccessError
	if !errors.As(err, &ae) {
		t.Fatalf("dial: %v, want an access error", err)
	}
	return ae.Status, string(ae.Code)
}

func TestWebsocketBadCodes(t *testing.T) {
	s := startServer(t, nil)
	tok := s.token("demo", "read", "write")
	withCode := func(uri, code string) string {
		u, _ := url.Parse(uri)
		q := u.Query()
		q.Set("code", code)
		u.RawQuery = q.Encode()
		return u.String()
	}
	wsURL := strings.Replace(s.url, "http://", "ws://", 1)

	used := s.access("demo", tok)
	if st, _ := wsStatus(t, used, nil); st != http.StatusSwitchingProtocols {
		t.Fatalf("first use: %d", st)
	}
	expired := s.access("demo", tok)
	other := s.access("other", s.token("other", "read"))
	foreign := withCode(s.access("demo", tok), strings.Split(strings.Split(s.access("demo", tok), "code=")[1], ".")[0]+".n2")
	cases := []struct {
		name   string
		uri    string
		before func()
		status int
		code   string
	}{
		{"missing code", wsURL + "/session/demo", nil, 401, "code_missing"},
		{"malformed code", wsURL + "/session/demo?code=abc", nil, 401, "code_malformed"},
		{"code with bad characters", wsURL + "/session/demo?code=" + strings.Repeat("%21", 22) + ".n1", nil, 401, "code_malformed"},
		{"unknown code", wsURL + "/session/demo?code=AAAAAAAAAAAAAAAAAAAAAA.n1", nil, 401, "code_invalid"},
		{"reused code", used, nil, 401, "code_invalid"},
		{"code for another topic", strings.Replace(other, "/session/other", "/session/demo", 1), nil, 403, "code_topic_mismatch"},
		{"code of a node that is gone", foreign, nil, 401, "code_invalid"},
		{"expired code", expired, func() { s.clock.Advance(31 * time.Second) }, 401, "code_expired"},
		{"unknown prefix", wsURL + "/nosuch/demo?code=x", nil, 404, "unknown_prefix"},
		{"bad topic", wsURL + "/session/a%20b?code=x", nil, 400, "invalid_topic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			status, code := wsStatus(t, tc.uri, nil)
			if status != tc.status || code != tc.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tc.status, tc.code)
			}
		})
	}

	t.Run("token expired between access and exchange", func(t *testing.T) {
		c := s.claims("demo", "read")
		c.ExpiresAt = jwt.NewNumericDate(s.clock.Now().Add(10 * time.Second))
		uri := s.access("demo", s.sign(c))
		s.clock.Advance(16 * time.Second) // past exp and the 5 s leeway
		if status, code := wsStatus(t, uri, nil); status != 401 || code != "token_expired" {
			t.Fatalf("got %d %q", status, code)
		}
	})
	t.Run("plain GET does not burn the code", func(t *testing.T) {
		uri := s.access("demo", tok)
		resp, err := http.Get(strings.Replace(uri, "ws://", "http://", 1))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("plain GET: %d", resp.StatusCode)
		}
		if st, _ := wsStatus(t, uri, nil); st != http.StatusSwitchingProtocols {
			t.Fatalf("code unusable after plain GET: %d", st)
		}
	})
	t.Run("malformed handshake does not burn the code", func(t *testing.T) {
		uri := s.access("demo", tok)
		httpURL := strings.Replace(uri, "ws://", "http://", 1)
		for _, tc := range []struct {
			version, key string
			status       int
			code         string
		}{{"8", "dGhlIHNhbXBsZSBub25jZQ==", 426, "bad_websocket_version"}, {"13", "short", 400, "bad_websocket_key"}} {
			req, _ := http.NewRequest("GET", httpURL, nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", tc.version)
			req.Header.Set("Sec-WebSocket-Key", tc.key)
			if status, code, _ := do(t, req); status != tc.status || code != tc.code {
				t.Fatalf("version %s key %s: %d %s", tc.version, tc.key, status, code)
			}
		}
		if st, _ := wsStatus(t, uri, nil); st != http.StatusSwitchingProtocols {
			t.Fatalf("code unusable after malformed handshakes: %d", st)
		}
	})
	t.Run("forbidden origin", func(t *testing.T) {
		uri := s.access("demo", tok)
		status, code := wsStatus(t, uri, http.Header{"Origin": {"https://evil.example"}})
		if status != 403 || code != "origin_forbidden" {
			t.Fatalf("got %d %q", status, code)
		}
	})
}

func TestRelayEndToEnd(t *testing.T) {
	s := startServer(t, nil)
	a := s.dial("demo", s.token("demo", "read", "write"))
	b := s.dial("demo", s.token("demo", "read", "write"))
	ro := s.dial("demo", s.token("demo", "read"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wait.For(t, "3 connections", func() bool { return s.Relay().Stats().Connections == 3 })

	if err := a.Write(ctx, client.Text, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(ctx, client.Binary, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Conn{b, ro} {
		typ, data, err := c.Read(ctx)
		if err != nil || typ != client.Text || string(data) != "hello" {
			t.Fatalf("got %v %q %v", typ, data, err)
		}
		typ, data, err = c.Read(ctx)
		if err != nil || typ != client.Binary || string(data) != "\x00\x01\x02" {
			t.Fatalf("got %v %q %v", typ, data, err)
		}
	}
	// b answers; a gets it and is never echoed its own messages.
	if err := b.Write(ctx, client.Text, []byte("back")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := a.Read(ctx); err != nil || string(data) != "back" {
		t.Fatalf("a got %q %v", data, err)
	}
}

func expectClose(t *testing.T, c *client.Conn, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce *client.CloseError
		if !errors.As(err, &ce) || int(ce.Code) != code {
			t.Fatalf("read error %v, want close %d", err, code)
		}
		return
	}
}

func TestCloseCodes(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Relay.MaxMessageBytes = 1024; c.Relay.SendQueueBytes = 64 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("too big closes the sender only", func(t *testing.T) {
		w, r := s.dial("big", s.token("big", "read", "write")), s.dial("big", s.token("big", "read"))
		// The websockets are open before the relay has registered them: a
		// message sent before r is registered would not reach it.
		wait.For(t, "both readers registered", func() bool { return s.Relay().Readers("big") == 2 })
		if err := w.Write(ctx, client.Binary, make([]byte, 1025)); err != nil {
			t.Fatal(err)
		}
		expectClose(t, w, 1009)
		w2 := s.dial("big", s.token("big", "write"))
		w2.Write(ctx, client.Text, []byte("still here"))
		if _, data, err := r.Read(ctx); err != nil || string(data) != "still here" {
			t.Fatalf("reader after 1009: %q %v", data, err)
		}
	})
	t.Run("invalid utf-8", func(t *testing.T) {
		w := s.dial("utf", s.token("utf", "write"))
		w.Write(ctx, client.Text, []byte{0xff, 0xfe})
		expectClose(t, w, 1007)
	})
	t.Run("token expiry", func(t *testing.T) {
		c := s.claims("exp", "read")
		c.ExpiresAt = jwt.NewNumericDate(s.clock.Now().Add(time.Second))
		expectClose(t, s.dial("exp", s.sign(c)), 4001)
	})
}

func TestShutdownSends1001(t *testing.T) {
	s := startServer(t, nil)
	conns := []*client.Conn{s.dial("a", s.token("a", "read")), s.dial("b", s.token("b", "read", "write"))}
	wait.For(t, "connections", func() bool { return s.Relay().Stats().Connections == 2 })
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	for _, c := range conns {
		expectClose(t, c, 1001)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Health checks report draining until the listener is gone.
}

// TestStalledReaderOverWebsockets: a client that never reads does not slow
// the writer or the healthy readers, and its losses are counted; under the
// close policy it is closed as a slow consumer.
func TestStalledReaderOverWebsockets(t *testing.T) {
	for _, policy := range []relay.Policy{relay.PolicyDrop, relay.PolicyClose} {
		t.Run(policy.String(), func(t *testing.T) {
			s := startServer(t, func(c *Config, d *Deps) {
				c.Relay.SendQueueBytes = 256 << 10
				c.Relay.MaxMessageBytes = 4 << 10
				c.Relay.SlowConsumer = policy
				c.Relay.WriteTimeout = time.Minute
				c.Relay.CloseTimeout = 100 * time.Millisecond
			})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			w := s.dial("t", s.token("t", "write"))
			_ = s.dial("t", s.token("t", "read")) // never reads
			healthy := []*client.Conn{s.dial("t", s.token("t", "read")), s.dial("t", s.token("t", "read"))}
			wait.For(t, "connections", func() bool { return s.Relay().Stats().Connections == 4 })

			// 24 MiB: more than the stalled client's socket buffers and queue.
			const n, size, window = 6000, 4096, 16
			payload := make([]byte, size)
			var wg sync.WaitGroup
			received := make([]atomic.Int64, len(healthy))
			for k, r := range healthy {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var buf []byte
					for i := range n {
						received[k].Store(int64(i))
						_, data, err := r.ReadInto(ctx, buf)
						if err != nil {
							t.Errorf("healthy reader: %v after %d", err, i)
							return
						}
						buf = data
						if got := int(data[0]) | int(data[1])<<8; got != i&0xffff {
							t.Errorf("healthy reader: message %d, want %d", got, i)
							return
						}
					}
				}()
			}
			for i := range n {
				payload[0], payload[1] = byte(i), byte(i>>8)
				if err := w.Write(ctx, client.Binary, payload); err != nil {
					t.Fatal(err)
				}
				if i >= window { // the healthy readers keep up: at most a window behind
					wait.For(t, "healthy readers", func() bool {
						for k := range received {
							if received[k].Load() < int64(i-window) {
								return t.Failed()
							}
						}
						return true
					})
				}
			}
			wg.Wait()
			st := s.Relay().Stats()
			if policy == relay.PolicyDrop {
				if drops := st.Drops["queue_head"] + st.Drops["queue_tail"]; drops == 0 {
					t.Fatalf("no drops counted for the stalled reader: %+v", st)
				}
			} else {
				wait.For(t, "slow consumer closed", func() bool { return s.Relay().Stats().Closes["slow_consumer"] == 1 })
			}
		})
	}
}

func TestHealthAndUnknownPaths(t *testing.T) {
	s := startServer(t, nil)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/nope": 404, "/api/v1/nothing": 404} {
		req, _ := http.NewRequest(http.MethodGet, s.url+path, nil)
		if status, _, _ := do(t, req); status != want {
			t.Errorf("GET %s: %d, want %d", path, status, want)
		}
	}
	// A known path with a method it does not serve: the router's 405, in
	// JSON like every other error (do fails on anything else), with Allow.
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodDelete, "/healthz", "GET, HEAD"},
		{http.MethodPut, "/api/v1/revocations", "GET, HEAD, POST"},
		{http.MethodDelete, "/session/demo", "GET, HEAD, POST"}, // the access endpoint and the websocket
	} {
		req, _ := http.NewRequest(tc.method, s.url+tc.path, nil)
		status, _, h := do(t, req)
		if status != http.StatusMethodNotAllowed || h.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", tc.method, tc.path, status, h.Get("Allow"), tc.allow)
		}
	}
}

// TestDeadPeerDetection: a peer that stops answering pings (it never reads,
// so it never sees them) is closed.
func TestDeadPeerDetection(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) {
		c.Relay.PingInterval = 50 * time.Millisecond
		c.Relay.PongTimeout = 100 * time.Millisecond
	})
	pingTimeouts := func() uint64 { return s.Relay().Stats().Closes["ping_timeout"] }
	_ = s.dial("quiet", s.token("quiet", "read")) // never reads, so never answers
	wait.For(t, "ping timeout", func() bool { return pingTimeouts() == 1 })
	// A reading peer answers pings and stays. It is connected before a
	// second quiet peer, so its first ping's deadline passes before that
	// peer's does: once the quiet one is closed, a live peer that had not
	// answered would have been closed already.
	live := s.dial("live", s.token("live", "read"))
	go func() {
		for {
			if _, _, err := live.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	_ = s.dial("quiet2", s.token("quiet2", "read"))
	wait.For(t, "the second quiet peer's ping timeout", func() bool { return pingTimeouts() >= 2 })
	if n := pingTimeouts(); n != 2 {
		t.Fatalf("%d ping timeouts, want 2: a live peer was closed for not answering pings", n)
	}
	if !slices.ContainsFunc(s.Relay().Connections(), func(c relay.ConnStatus) bool { return c.Info.Topic == "live" }) {
		t.Fatal("the live peer is gone")
	}
}
