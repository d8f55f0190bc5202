package servertest_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// TestStartDialAndRelay: two clients dialled through the harness reach
// each other through the real node.
func TestStartDialAndRelay(t *testing.T) {
	s := servertest.Start(t)
	alice := s.Dial(t, "demo", "read", "write")
	bob := s.Dial(t, "demo", "read")
	wait.For(t, "both connections registered", func() bool { return s.TopicConns("demo") == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := alice.Write(ctx, client.Text, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	typ, data, err := bob.Read(ctx)
	if err != nil || typ != client.Text || string(data) != "hello" {
		t.Fatalf("bob read %v %q %v", typ, data, err)
	}
}

// TestClockExpiresTokens: moving the node's clock past a token's expiry
// makes the node refuse it, without waiting an hour.
func TestClockExpiresTokens(t *testing.T) {
	s := servertest.Start(t)
	tok := s.Token(t, "demo", "read")
	s.Clock.Advance(servertest.TokenTTL + time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Access(ctx, s.URL, "demo", tok, nil)
	var ae *client.AccessError
	if !errors.As(err, &ae) || ae.Code != wire.ErrorTokenExpired {
		t.Fatalf("access with an expired token: %v, want %s", err, wire.ErrorTokenExpired)
	}
}

// TestConfigure: configure functions see the defaults and their changes
// reach the node; clearing ResultsDir turns the jobs API off.
func TestConfigure(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, d *server.Deps) {
		if c.ResultsDir == "" || c.Listen != "127.0.0.1:0" || d.Now == nil {
			t.Errorf("defaults not set before configure: %+v %+v", c, d)
		}
		c.ResultsDir = ""
		c.NodeID = "other"
	})
	if s.Config.NodeID != "other" || s.Config.ResultsDir != "" || s.Deps.Store == nil {
		t.Fatalf("config %+v", s.Config)
	}
	resp, err := httpGet(t, s.URL+"/api/v1/jobs")
	if err != nil {
		t.Fatal(err)
	}
	if resp != 404 {
		t.Errorf("GET /api/v1/jobs without ResultsDir: %d, want 404", resp)
	}
}

func httpGet(t *testing.T, url string) (int, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
