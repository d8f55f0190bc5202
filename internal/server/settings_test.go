package server

import (
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestNegativeSettingsAreErrors: a negative duration or count is a mistake
// (a sign typed by accident), never "the default": Start refuses it with an
// error naming the setting's flag.
func TestNegativeSettingsAreErrors(t *testing.T) {
	for _, tc := range []struct {
		flag string
		mod  func(*Config)
	}{
		{"--shutdown-timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }},
		{"--stats-every", func(c *Config) { c.StatsEvery = -time.Second }},
		{"--leeway", func(c *Config) { c.Leeway = -time.Second }},
		{"--code-ttl", func(c *Config) { c.CodeTTL = -time.Second }},
		{"--max-token-ttl", func(c *Config) { c.MaxTokenTTL = -time.Second }},
		{"--max-refresh-lifetime", func(c *Config) { c.MaxRefreshLifetime = -time.Second }},
		{"--session-ttl", func(c *Config) { c.Web.SessionTTL = -time.Second }},
		{"--account-token-ttl", func(c *Config) { c.Web.APITokenTTL = -time.Second }},
		{"--max-conns-per-token", func(c *Config) { c.Limits.ConnsPerToken = -1 }},
		{"--max-conns-per-subject", func(c *Config) { c.Limits.ConnsPerSubject = -1 }},
		{"--max-requests-per-address", func(c *Config) { c.Limits.RequestsPerSecond = -1 }},
		{"--request-burst", func(c *Config) { c.Limits.RequestBurst = -1 }},
		{"--fd-reserve", func(c *Config) { c.Limits.FDReserve = -1 }},
	} {
		cfg := Config{Listen: "127.0.0.1:0", Secret: testSecret, NodeID: "n1", ResultsDir: t.TempDir()}
		tc.mod(&cfg)
		s, err := New(cfg, Deps{Store: openStore(t, t.TempDir())})
		if err == nil {
			s.Shutdown(t.Context())
			t.Errorf("%s negative: started", tc.flag)
			continue
		}
		if !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s negative: error %q does not name the flag", tc.flag, err)
		}
	}
}

// TestFailedStartLeavesNothingRunning: a New that fails late (the metrics
// address is taken) takes down what it had set up — the listener, the bus,
// the jobs manager and the agent link — through one unwind path, and so
// does Shutdown of a server that was never started: no descriptor and no
// goroutine is left behind.
func TestFailedStartLeavesNothingRunning(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	st := openStore(t, t.TempDir())
	openFDs := func() int {
		fds, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatalf("counting descriptors: %v", err)
		}
		return len(fds)
	}
	failStart := func() {
		cfg := Config{Listen: "127.0.0.1:0", Secret: testSecret, NodeID: "n1", ResultsDir: t.TempDir(),
			MetricsListen: taken.Addr().String()}
		if s, err := New(cfg, Deps{Store: st}); err == nil {
			s.Shutdown(t.Context())
			t.Fatal("New with a taken metrics address succeeded")
		}
		cfg.MetricsListen = "127.0.0.1:0"
		s, err := New(cfg, Deps{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Shutdown(t.Context()); err != nil {
			t.Fatalf("Shutdown of a server never started: %v", err)
		}
	}
	// With the collector off, no finalizer can close a forgotten listener
	// and hide the leak.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	failStart() // the store's connection pools open what they keep
	fdsBefore, goroutinesBefore := openFDs(), runtime.NumGoroutine()
	for range 3 { // the same failure three times: nothing may pile up
		failStart()
	}
	wait.For(t, "what the failed starts set up to be taken down", func() bool {
		return openFDs() <= fdsBefore && runtime.NumGoroutine() <= goroutinesBefore
	})
}
