package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestLameDuckThenDrain: during the lame-duck period /readyz fails (503
// draining) while the node goes on serving — /healthz, open connections,
// and new ones — so the load balancer takes it out before anything is
// refused; then every websocket is closed with 1001 and Shutdown returns.
func TestLameDuckThenDrain(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) {
		c.LameDuck = time.Hour // ended by the test, below
		c.DrainWindow = 200 * time.Millisecond
	})
	old := s.dial("t", s.token("t", "read"))
	wait.For(t, "the reader", func() bool { return s.Relay().Stats().Connections == 1 })
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()

	status := func(path string) int {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	wait.For(t, "/readyz to fail", func() bool { return status("/readyz") == http.StatusServiceUnavailable })
	if got := status("/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz in the lame-duck period: %d", got)
	}
	// A client that arrives now is served, and the open reader reads it.
	w := s.dial("t", s.token("t", "write"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Write(ctx, client.Text, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := old.Read(ctx); err != nil || string(data) != "still here" {
		t.Fatalf("the open reader in the lame-duck period: %q, %v", data, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned in the lame-duck period: %v", err)
	default:
	}

	close(s.endLameDuck)
	for _, c := range []*client.Conn{old, w} {
		expectClose(t, c, 1001)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDrainSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		flag string
	}{
		{"negative lame duck", func(c *Config) { c.LameDuck = -time.Second }, "--lame-duck"},
		{"negative drain window", func(c *Config) { c.DrainWindow = -time.Second }, "--drain-window"},
		{"window as long as the shutdown timeout", func(c *Config) { c.DrainWindow, c.ShutdownTimeout = 5*time.Second, 5*time.Second }, "--drain-window"},
	} {
		cfg := Config{Listen: "127.0.0.1:0", Secret: testSecret, NodeID: "n1"}
		tc.mod(&cfg)
		s, err := New(cfg, Deps{Store: openStore(t, t.TempDir())})
		if err == nil {
			s.Shutdown(t.Context())
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s: error %q does not name %s", tc.name, err, tc.flag)
		}
	}
}
