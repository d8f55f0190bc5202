package access_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// The one-step connect (token in the bearer subprotocol), over real
// websockets on loopback against a whole node: it relays, it refuses
// exactly as the access request does, and it never echoes the token.

// refusal is a JSON error answer: status, code, and the challenge a 401
// carries.
type refusal struct {
	Status    int
	Code      string
	Challenge string
}

func readRefusal(t *testing.T, resp *http.Response) refusal {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("HTTP %d: body %q is not a JSON error", resp.StatusCode, b)
	}
	return refusal{resp.StatusCode, e.Error.Code, resp.Header.Get("WWW-Authenticate")}
}

// post is the access request for path with token, from origin ("" for none).
func post(t *testing.T, s *servertest.Server, path, token, origin string) refusal {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		return refusal{Status: http.StatusOK}
	}
	return readRefusal(t, resp)
}

// connect opens a websocket at path offering protocols, from origin ("" for
// none). It returns the connection and the 101's headers, or the refusal.
func connect(t *testing.T, s *servertest.Server, path, origin string, protocols ...string) (*websocket.Conn, http.Header, refusal) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	ws, resp, err := websocket.Dial(ctx, s.URL+path, &websocket.DialOptions{Subprotocols: protocols, HTTPHeader: h})
	if err == nil {
		t.Cleanup(func() { ws.CloseNow() })
		return ws, resp.Header, refusal{Status: http.StatusSwitchingProtocols}
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	return nil, nil, readRefusal(t, resp)
}

// oneStep is connect with the one-step subprotocols for token.
func oneStep(t *testing.T, s *servertest.Server, path, token, origin string) (*websocket.Conn, http.Header, refusal) {
	t.Helper()
	return connect(t, s, path, origin, wire.Subprotocol, wire.BearerSubprotocolPrefix+token)
}

// startLogged starts a node whose logs, at debug level, go to the returned
// buffer.
func startLogged(t *testing.T, configure ...func(*server.Config, *server.Deps)) (*servertest.Server, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	configure = append(configure, func(_ *server.Config, d *server.Deps) {
		d.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	return servertest.Start(t, configure...), logs
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestOneStepConnectRelays: a reader and a writer each connect in one step;
// the writer's message reaches the reader; the 101 selects switchboard.v1
// and carries nothing of the token.
func TestOneStepConnectRelays(t *testing.T) {
	s, logs := startLogged(t)
	readTok, writeTok := s.Token(t, "one/step", auth.ScopeRead), s.Token(t, "one/step", auth.ScopeWrite)
	reader, h, r := oneStep(t, s, "/session/one/step", readTok, "")
	if r.Status != http.StatusSwitchingProtocols {
		t.Fatalf("reader: %+v", r)
	}
	if got := h.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != wire.Subprotocol {
		t.Fatalf("101 selects %q, want only %q", got, wire.Subprotocol)
	}
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, readTok) || strings.Contains(v, "bearer") {
				t.Fatalf("101 header %s: %q echoes the bearer subprotocol", k, v)
			}
		}
	}
	if reader.Subprotocol() != wire.Subprotocol {
		t.Fatalf("subprotocol %q", reader.Subprotocol())
	}
	writer, _, r := oneStep(t, s, "/session/one/step", writeTok, "")
	if r.Status != http.StatusSwitchingProtocols {
		t.Fatalf("writer: %+v", r)
	}
	// The reader's 101 was held until it was registered (HoldsHandshake):
	// nothing sent after both handshakes can be lost.
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	if err := writer.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	typ, data, err := reader.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(data) != "hello" {
		t.Fatalf("reader got %v %q %v", typ, data, err)
	}
	if strings.Contains(logs.String(), readTok) || strings.Contains(logs.String(), writeTok) {
		t.Fatal("a token is in the logs")
	}
}

// TestOneStepRefusesAsAccessDoes: every refusal of the access request is
// the one-step connect's too, with the same status, code and challenge,
// before any upgrade; and the token is never logged.
func TestOneStepRefusesAsAccessDoes(t *testing.T) {
	s, logs := startLogged(t, func(c *server.Config, _ *server.Deps) { c.Limits.ConnsPerToken = 1 })
	sign := func(topic string, f func(*auth.Claims), scopes ...string) string {
		c := s.Claims(topic, scopes...)
		if f != nil {
			f(&c)
		}
		return s.Sign(t, c)
	}
	good := s.Token(t, "t", auth.ScopeRead)
	forged := good[:len(good)-4] + "AAAA"
	if forged == good {
		forged = good[:len(good)-4] + "BBBB"
	}
	expired := sign("t", func(c *auth.Claims) { c.ExpiresAt.Time = s.Clock.Now().Add(-time.Hour) }, auth.ScopeRead)
	otherAudience := sign("t", func(c *auth.Claims) { c.Audience = []string{"https://elsewhere.example"} }, auth.ScopeRead)
	shellToken := sign("t", func(c *auth.Claims) { c.Prefix = wire.PrefixShell }, auth.ScopeRead)
	noScope := sign("t", nil, auth.ScopeStats)
	revokedBooking := sign("t", func(c *auth.Claims) { c.BookingID = "b-revoked" }, auth.ScopeRead)
	revokedToken := sign("t", func(c *auth.Claims) { c.ID = "jti-revoked" }, auth.ScopeRead)
	busy := sign("t", func(c *auth.Claims) { c.ID = "busy" }, auth.ScopeRead)
	for _, rev := range []string{`{"kind":"booking","value":"b-revoked","ttl":"1h"}`, `{"kind":"token","value":"jti-revoked","ttl":"1h"}`} {
		admin := s.Claims("", auth.ScopeAdmin)
		admin.Subject, admin.Prefix = "operator", ""
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/api/v1/revocations", strings.NewReader(rev))
		req.Header.Set("Authorization", "Bearer "+s.Sign(t, admin))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("revoke %s: %d", rev, resp.StatusCode)
		}
	}
	// busy holds its one connection.
	if _, _, r := oneStep(t, s, "/session/t", busy, ""); r.Status != http.StatusSwitchingProtocols {
		t.Fatalf("busy's first connection: %+v", r)
	}

	for _, tc := range []struct {
		name, path, token, origin string
		want                      refusal
	}{
		{"forged signature", "/session/t", forged, "", refusal{401, string(wire.ErrorTokenSignatureInvalid), `Bearer error="invalid_token"`}},
		{"not a JWT", "/session/t", "not.a.jwt", "", refusal{401, string(wire.ErrorTokenMalformed), `Bearer error="invalid_token"`}},
		{"expired", "/session/t", expired, "", refusal{401, string(wire.ErrorTokenExpired), `Bearer error="invalid_token"`}},
		{"wrong audience", "/session/t", otherAudience, "", refusal{401, string(wire.ErrorTokenWrongAudience), `Bearer error="invalid_token"`}},
		{"wrong topic", "/session/other", good, "", refusal{403, string(wire.ErrorTopicForbidden), ""}},
		{"wrong prefix", "/session/t", shellToken, "", refusal{403, string(wire.ErrorPrefixForbidden), ""}},
		{"no read or write", "/session/t", noScope, "", refusal{403, string(wire.ErrorScopeForbidden), ""}},
		{"revoked booking", "/session/t", revokedBooking, "", refusal{403, string(wire.ErrorBookingDenied), ""}},
		{"revoked token", "/session/t", revokedToken, "", refusal{403, string(wire.ErrorTokenRevoked), ""}},
		{"token's connections", "/session/t", busy, "", refusal{429, string(wire.ErrorTooManyConnections), ""}},
		{"unknown prefix", "/nope/t", good, "", refusal{404, string(wire.ErrorUnknownPrefix), ""}},
		{"invalid topic", "/session/a..b/", good, "", refusal{400, string(wire.ErrorInvalidTopic), ""}},
		{"browser from another origin", "/session/t", good, "https://evil.example", refusal{403, string(wire.ErrorOriginForbidden), ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			viaPost := post(t, s, tc.path, tc.token, tc.origin)
			_, _, viaConnect := oneStep(t, s, tc.path, tc.token, tc.origin)
			if viaPost != tc.want {
				t.Errorf("access request: %+v, want %+v", viaPost, tc.want)
			}
			if viaConnect != viaPost {
				t.Errorf("one-step connect: %+v, access request: %+v", viaConnect, viaPost)
			}
		})
	}
	// A page of the server's own origin connects (the browser's way).
	if _, _, r := oneStep(t, s, "/session/t", good, strings.TrimSuffix(s.URL, "/")); r.Status != http.StatusSwitchingProtocols {
		t.Errorf("own origin: %+v", r)
	}
	for _, tok := range []string{good, forged, expired, revokedBooking, busy} {
		if strings.Contains(logs.String(), tok) {
			t.Fatal("a token is in the logs")
		}
	}
}

// TestOneStepMalformedOffers: what the bearer subprotocol cannot carry is
// refused before any upgrade, as a bad Authorization header is.
func TestOneStepMalformedOffers(t *testing.T) {
	s := servertest.Start(t)
	tok := s.Token(t, "t", auth.ScopeRead)
	huge := strings.Repeat("a", auth.MaxTokenBytes+1)
	for _, tc := range []struct {
		name, path string
		protocols  []string
		want       refusal
	}{
		{"without switchboard.v1", "/session/t", []string{wire.BearerSubprotocolPrefix + tok}, refusal{400, string(wire.ErrorMalformedAuthorization), ""}},
		{"two bearers", "/session/t", []string{wire.Subprotocol, wire.BearerSubprotocolPrefix + tok, wire.BearerSubprotocolPrefix + tok}, refusal{400, string(wire.ErrorMalformedAuthorization), ""}},
		{"token over 8 KiB", "/session/t", []string{wire.Subprotocol, wire.BearerSubprotocolPrefix + huge}, refusal{400, string(wire.ErrorAuthorizationTooLarge), ""}},
		{"a code as well", "/session/t?code=" + wire.NewCode("n1"), []string{wire.Subprotocol, wire.BearerSubprotocolPrefix + tok}, refusal{400, string(wire.ErrorMalformedAuthorization), ""}},
		{"neither code nor bearer", "/session/t", []string{wire.Subprotocol}, refusal{401, string(wire.ErrorCodeMissing), ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, r := connect(t, s, tc.path, "", tc.protocols...); r != tc.want {
				t.Errorf("got %+v, want %+v", r, tc.want)
			}
		})
	}
}

// TestClientDialsInOneStep: pkg/client's Dial connects in one step (the
// node counts a one-step connect and no access request), and with
// Options.TwoStep in two.
func TestClientDialsInOneStep(t *testing.T) {
	s := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	tok := s.Token(t, "t", auth.ScopeRead)
	c, err := client.Dial(ctx, s.URL, "t", tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.CloseNow()
	if got := outcomes(t, s); got != [3]string{"0", "0", "1"} {
		t.Fatalf("after Dial: access, exchange, connect ok = %v, want 0 0 1", got)
	}
	c, err = client.Dial(ctx, s.URL, "t", tok, &client.Options{TwoStep: true})
	if err != nil {
		t.Fatal(err)
	}
	c.CloseNow()
	if got := outcomes(t, s); got != [3]string{"1", "1", "1"} {
		t.Fatalf("after a two-step Dial: access, exchange, connect ok = %v, want 1 1 1", got)
	}
	// A refusal is the access request's.
	_, err = client.Dial(ctx, s.URL, "other", tok, nil)
	var ae *client.AccessError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != wire.ErrorTopicForbidden {
		t.Fatalf("Dial to another topic: %v", err)
	}
}

// outcomes reads the node's ok counts of the stages access, exchange and
// connect from /metrics.
func outcomes(t *testing.T, s *servertest.Server) [3]string {
	t.Helper()
	c := s.Claims("", auth.ScopeStats)
	c.Prefix = ""
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+s.Sign(t, c))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %d %s", resp.StatusCode, b)
	}
	var out [3]string
	for i, stage := range []string{"access", "exchange", "connect"} {
		out[i] = "0"
		prefix := `switchboard_access_total{outcome="ok",stage="` + stage + `"} `
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				out[i] = v
			}
		}
	}
	return out
}
