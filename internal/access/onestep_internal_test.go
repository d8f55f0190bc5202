package access

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"switchboard/internal/apierr"
	"switchboard/internal/auth"
	"switchboard/pkg/wire"
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
