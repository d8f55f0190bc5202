package access

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// homeProbe is a probeEndpoint whose connections must meet at their
// topic's home node (Permit.Home), as shell's do.
type homeProbe struct{ probeEndpoint }

func (p *homeProbe) Authorize(c *auth.Claims, topic string) (Permit, *apierr.Error) {
	pm, e := p.probeEndpoint.Authorize(c, topic)
	pm.Home = true
	return pm, e
}

// elsewhere is a Placement whose every topic's home is node n2, which
// never answers.
type elsewhere struct{}

func (elsewhere) Home(prefix, topic string) string { return "n2" }
func (elsewhere) IssueAt(context.Context, string, Grant, time.Time) (string, error) {
	return "", errors.New("n2 does not answer")
}

// TestOneStepHomeElsewhere: in a cluster, a one-step connect that must meet
// its peer at another node is refused with 421 two_step_required before
// any upgrade; one that need not (a session topic) is served where it
// arrives.
func TestOneStepHomeElsewhere(t *testing.T) {
	f := startRegistry(t, 0, 0, func(c *Config) { c.Placement = elsewhere{} })
	p := &homeProbe{probeEndpoint{served: make(chan Grant, 1)}}
	if err := f.h.Handle("probe", p); err != nil {
		t.Fatal(err)
	}
	oneStep := func(path, token string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, f.pub.String()+path, &websocket.DialOptions{Subprotocols: []string{wire.Subprotocol, wire.BearerSubprotocolPrefix + token}})
		if err == nil {
			c.CloseNow()
			return http.StatusSwitchingProtocols, c.Subprotocol()
		}
		if resp == nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := oneStep("/probe/x", f.token(t, "probe", "x", "", "", auth.ScopeWrite)); status != http.StatusMisdirectedRequest || !strings.Contains(body, string(wire.ErrorTwoStepRequired)) {
		t.Errorf("probe homed elsewhere: %d %s", status, body)
	}
	if status, proto := oneStep("/session/x", f.token(t, wire.PrefixSession, "x", "", "", auth.ScopeRead)); status != http.StatusSwitchingProtocols || proto != wire.Subprotocol {
		t.Errorf("session homed elsewhere: %d %s", status, proto)
	}
	// The two-step flow still serves the probe (its code is issued here
	// when the home does not answer).
	if status, code, _ := f.post(t, "/probe/x", f.token(t, "probe", "x", "", "", auth.ScopeWrite)); status != http.StatusOK {
		t.Errorf("two-step probe: %d %s", status, code)
	}
}

// FuzzOneStepOffer sends arbitrary Sec-WebSocket-Protocol headers to the
// websocket endpoint: none may cause a panic or a 5xx, every refusal is a
// JSON error, and no response echoes what the header offered. (No seed
// holds a valid token, and the fuzzer cannot sign one: nothing upgrades.)
func FuzzOneStepOffer(f *testing.F) {
	mux, _ := fuzzHandler(f)
	f.Add("switchboard.v1, switchboard.bearer.eyJhbGciOiJIUzI1NiJ9.e30.c2ln")
	f.Add("switchboard.bearer.a.b.c")
	f.Add("switchboard.v1,switchboard.bearer.x,switchboard.bearer.y")
	f.Add("SWITCHBOARD.V1, Switchboard.Bearer.secret-token")
	f.Add("switchboard.bearer.")
	f.Add(",,, ,switchboard.v1")
	f.Fuzz(func(t *testing.T, offer string) {
		req, err := http.NewRequest(http.MethodGet, "http://relay.test/session/expt/a", nil)
		if err != nil {
			return
		}
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header["Sec-Websocket-Protocol"] = []string{offer}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("offer %q: status %d: %s", offer, rec.Code, rec.Body)
		}
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" {
			t.Fatalf("offer %q: status %d without JSON error: %s", offer, rec.Code, rec.Body)
		}
		for _, p := range strings.Split(offer, ",") {
			_, tok, ok := strings.Cut(strings.TrimSpace(p), ".bearer.")
			if !ok || len(tok) < 8 {
				continue
			}
			if strings.Contains(rec.Body.String(), tok) {
				t.Fatalf("offer %q: the body echoes the token: %s", offer, rec.Body)
			}
			for k, vs := range rec.Header() {
				for _, v := range vs {
					if strings.Contains(v, tok) {
						t.Fatalf("offer %q: header %s echoes the token: %q", offer, k, v)
					}
				}
			}
		}
	})
}
