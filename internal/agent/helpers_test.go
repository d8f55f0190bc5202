package agent

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// testRelay is a real node (servertest) with the agent tests' token
// helpers.
type testRelay struct {
	*servertest.Server
	t *testing.T
}

// startRelay starts a node for the test (see servertest.Start).
func startRelay(t *testing.T, configure ...func(*server.Config, *server.Deps)) *testRelay {
	t.Helper()
	return &testRelay{Server: servertest.Start(t, configure...), t: t}
}

// token signs a token for topic with the given prefix, lifetime and scopes.
func (r *testRelay) token(topic, prefix string, ttl time.Duration, scopes ...string) string {
	c := r.Claims(topic, scopes...)
	c.Prefix = prefix
	c.ExpiresAt = jwt.NewNumericDate(r.Clock.Now().Add(ttl))
	return r.Sign(r.t, c)
}

// tokenFile writes a session token (read, write) for topic to a file.
func (r *testRelay) tokenFile(topic string) string {
	return writeFile(r.t, "token", r.token(topic, "session", time.Hour, "read", "write")+"\n")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fastBackoff makes tests retry quickly.
var fastBackoff = Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond, Stable: time.Hour, Long: time.Hour}

// runAgent starts an agent on cfg and stops it at the end of the test,
// checking that Run returns.
func runAgent(t *testing.T, cfg *Config, opts Options) *Agent {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return startAgent(t, cfg, opts)
}

// startAgent is runAgent without validating cfg again.
func startAgent(t *testing.T, cfg *Config, opts Options) *Agent {
	t.Helper()
	if opts.Backoff == (Backoff{}) {
		opts.Backoff = fastBackoff
	}
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	for _, s := range a.streams {
		if err := s.prepare(); err != nil {
			t.Fatal(err)
		}
	}
	go func() { done <- a.runPrepared(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("agent did not stop within 15 s")
		}
	})
	return a
}

// status returns the status of the link named name.
func status(t *testing.T, a *Agent, name string) LinkStatus {
	t.Helper()
	for _, s := range a.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no link %q", name)
	return LinkStatus{}
}

// readN reads messages from c until want bytes have arrived and returns
// them and the messages.
func readN(t *testing.T, c *client.Conn, want int) ([]byte, [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var all []byte
	var msgs [][]byte
	for len(all) < want {
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", len(all), want, err)
		}
		all = append(all, data...)
		msgs = append(msgs, data)
	}
	return all, msgs
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// listenLocal opens a loopback listener for a local service.
func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// accept accepts one connection within 10 s.
func accept(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(10 * time.Second):
		ln.Close()
		t.Fatal("no local connection within 10 s")
	}
	return nil
}
