package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestOneTokenCannotOpenUnboundedConnections: the attack of the review —
// one read-only booking token opening websockets as fast as it can — stops
// at the default per-token limit with 429 JSON errors, both at the access
// endpoint and at the exchange of codes fetched before the limit was hit.
func TestOneTokenCannotOpenUnboundedConnections(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Limits.RequestsPerSecond = 100_000 })
	tok := s.token("lab", auth.ScopeRead)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Codes fetched up front: the exchange must refuse too.
	var spare []string
	for range 3 {
		uri, err := client.Access(ctx, s.url, "lab", tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		spare = append(spare, uri)
	}
	for i := range access.DefaultMaxConnsPerToken - 3 {
		if _, err := client.Dial(ctx, s.url, "lab", tok, nil); err != nil {
			t.Fatalf("connection %d of one token: %v", i+1, err)
		}
	}
	for _, uri := range spare[:3] {
		c, err := client.DialURI(ctx, uri, nil)
		if err != nil {
			t.Fatalf("a code fetched earlier, under the limit: %v", err)
		}
		defer c.CloseNow()
	}
	var ae *client.AccessError
	if _, err := client.Access(ctx, s.url, "lab", tok, nil); !errors.As(err, &ae) || ae.Status != 429 || ae.Code != "too_many_connections" {
		t.Fatalf("access over the per-token limit: %v", err)
	}
	// Other tokens are not affected.
	other := s.dial("lab", s.token("lab", auth.ScopeRead, auth.ScopeWrite)+"")
	other.CloseNow()
	if status, _ := s.api("GET", "/healthz", "", ""); status != 200 {
		t.Fatalf("healthz: %d", status)
	}
}

// TestSubjectLimitAndRelease: a subject's connections over all its tokens
// are bounded; a place frees when a connection closes.
func TestSubjectLimitAndRelease(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Limits.ConnsPerSubject = 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tokenOf := func() string {
		c := s.claims("lab", auth.ScopeRead)
		c.Subject = "mallory"
		c.ID = fmt.Sprint(time.Now().UnixNano())
		return s.sign(c)
	}
	var conns []*client.Conn
	for range 3 {
		conns = append(conns, s.dial("lab", tokenOf()))
	}
	var ae *client.AccessError
	if _, err := client.Dial(ctx, s.url, "lab", tokenOf(), nil); !errors.As(err, &ae) || ae.Status != 429 || !strings.Contains(ae.Message, "subject") {
		t.Fatalf("fourth connection of one subject: %v", err)
	}
	conns[0].Close()
	wait.For(t, "a place to free", func() bool {
		c, err := client.Dial(ctx, s.url, "lab", tokenOf(), nil)
		if err == nil {
			c.CloseNow()
		}
		return err == nil
	})
}

// TestRequestRatePerAddress: an address over its request rate gets 429 JSON
// with Retry-After; the health checks are never limited; the bucket refills.
func TestRequestRatePerAddress(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Limits.RequestsPerSecond, c.Limits.RequestBurst = 1, 5 })
	get := func(path string) *http.Response {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	limited := 0
	for range 20 {
		resp := get("/api/v1/status")
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("429 without Retry-After or JSON: %v", resp.Header)
			}
		}
	}
	if limited < 10 {
		t.Fatalf("%d of 20 requests over a burst of 5 were limited", limited)
	}
	for range 20 {
		if resp := get("/healthz"); resp.StatusCode != 200 {
			t.Fatalf("healthz under a rate limit: %d", resp.StatusCode)
		}
	}
	s.clock.Advance(10 * time.Second)
	if resp := get("/api/v1/status"); resp.StatusCode == http.StatusTooManyRequests {
		t.Fatal("the bucket did not refill")
	}
	_, body := s.api("GET", "/metrics", s.adminToken(), "")
	if !bytes.Contains(body, []byte(`switchboard_requests_refused_total{reason="rate_limited"}`)) {
		t.Fatal("metrics do not count rate-limited requests")
	}
}

// TestDescriptorHeadroom: once open connections reach the descriptor
// budget, new work is refused with 503 while /healthz still answers, and
// the node recovers when connections close.
func TestDescriptorHeadroom(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < 1000 {
		t.Fatalf("descriptor limit: %v %d", err, rl.Cur)
	}
	const budget = 8
	s := startServer(t, func(c *Config, d *Deps) { c.Limits.FDReserve = int(rl.Cur) - budget })
	var held []net.Conn
	for range budget + 1 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	wait.For(t, "the connections to be counted", func() bool { return s.open.Load() > budget })
	resp, body := rawExchange(t, s.Addr().String(), "POST /session/lab HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || jsonErrorCode(t, resp, body) != "overloaded" {
		t.Fatalf("over the budget: %d %s", resp.StatusCode, body)
	}
	if resp, body := rawExchange(t, s.Addr().String(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("healthz over the budget: %d %s", resp.StatusCode, body)
	}
	for _, c := range held {
		c.Close()
	}
	wait.For(t, "the node to recover", func() bool {
		resp, _ := rawExchange(t, s.Addr().String(), "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
		return resp.StatusCode != http.StatusServiceUnavailable
	})
	// Websockets count while they are open, and stop counting when closed
	// (through the hijacked connection's wrapper). The access request's
	// keep-alive connection is closed first, so only the websocket counts.
	http.DefaultClient.CloseIdleConnections()
	wait.For(t, "no connection left", func() bool { return s.open.Load() == 0 })
	ws := s.dial("lab", s.token("lab", auth.ScopeRead))
	http.DefaultClient.CloseIdleConnections()
	wait.For(t, "only the websocket to be counted", func() bool { return s.open.Load() == 1 })
	ws.Close()
	wait.For(t, "the websocket to be uncounted", func() bool { return s.open.Load() == 0 })
}

func TestAcceptErrorsLoggedAtWarnRateLimited(t *testing.T) {
	var buf bytes.Buffer
	a := &acceptErrorLog{log: slog.New(slog.NewTextHandler(&buf, nil)), interval: time.Hour}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	for range 5 {
		a.report(emfile)
	}
	a.report(net.ErrClosed)
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 || !strings.Contains(buf.String(), "too many open files") {
		t.Fatalf("want one warning naming the error, got:\n%s", buf.String())
	}
}

func TestNegativeLimitsAreErrors(t *testing.T) {
	for _, l := range []Limits{{ConnsPerToken: -1}, {RequestsPerSecond: -1}, {FDReserve: -1}} {
		if _, err := l.withDefaults(); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
}
