package server_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// These tests count a client's requests (access requests and websocket
// handshakes) with countingTransport (publish_test.go).

// TestClientWaitsOutRateLimit: a node whose per-address limit is used up
// answers 429 rate_limited with Retry-After: 1; pkg/client waits that long
// and connects on its retry, in one step and with Access alone.
func TestClientWaitsOutRateLimit(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.ResultsDir = ""
		c.Limits.RequestsPerSecond, c.Limits.RequestBurst = 1, 1
	})
	tok := s.Token(t, "retry/a", "read")
	for _, tc := range []struct {
		name string
		call func(ctx context.Context, opts *client.Options) error
	}{
		{"one step", func(ctx context.Context, opts *client.Options) error {
			c, err := client.Dial(ctx, s.URL, "retry/a", tok, opts)
			if err == nil {
				c.CloseNow()
			}
			return err
		}},
		{"access", func(ctx context.Context, opts *client.Options) error {
			_, err := client.Access(ctx, s.URL, "retry/a", tok, opts)
			return err
		}},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		// A call without retries empties the bucket (or finds it empty
		// after the last case); the next call is refused, then waits out
		// the Retry-After and connects.
		if err := tc.call(ctx, &client.Options{Retries: -1}); err != nil {
			var ae *client.AccessError
			if !errors.As(err, &ae) || ae.Code != wire.ErrorRateLimited {
				t.Fatalf("%s: first call: %v", tc.name, err)
			}
		}
		var ct countingTransport
		start := time.Now()
		err := tc.call(ctx, &client.Options{HTTPClient: &http.Client{Transport: &ct}, RetryMaxDelay: 5 * time.Second})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if n := ct.n.Load(); n < 2 {
			t.Fatalf("%s: %d request(s): the limit did not refuse any", tc.name, n)
		}
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Errorf("%s: connected after %v, before the refusal's Retry-After of 1 s", tc.name, d)
		}
	}
}

// TestClientGivesUpAfterItsRetries: refused every time, pkg/client makes
// 1 + Options.Retries attempts, each wait capped by RetryMaxDelay however
// long Retry-After is, and returns the last refusal; without time for a
// wait before its context ends, it does not wait.
func TestClientGivesUpAfterItsRetries(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.ResultsDir = ""
		c.Limits.RequestsPerSecond, c.Limits.RequestBurst = 0.001, 1 // then Retry-After: 1000
	})
	tok := s.Token(t, "retry/b", "read")
	if c, err := client.Dial(t.Context(), s.URL, "retry/b", tok, nil); err != nil {
		t.Fatal(err)
	} else {
		c.CloseNow()
	}
	for _, twoStep := range []bool{false, true} {
		var ct countingTransport
		start := time.Now()
		_, err := client.Dial(t.Context(), s.URL, "retry/b", tok, &client.Options{
			HTTPClient: &http.Client{Transport: &ct}, TwoStep: twoStep, Retries: 2, RetryMaxDelay: 20 * time.Millisecond,
		})
		var ae *client.AccessError
		if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != wire.ErrorRateLimited || ae.RetryAfter < 900*time.Second {
			t.Fatalf("two-step %v: %v (%+v), want the 429 rate_limited refusal with its Retry-After", twoStep, err, ae)
		}
		if n := ct.n.Load(); n != 3 {
			t.Errorf("two-step %v: %d requests, want 3 (1 + 2 retries)", twoStep, n)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("two-step %v: gave up after %v; the waits are capped at 20 ms (+25 %%)", twoStep, d)
		}
	}
	// A wait longer than the context has left is not begun.
	var ct countingTransport
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := client.Access(ctx, s.URL, "retry/b", tok, &client.Options{HTTPClient: &http.Client{Transport: &ct}, RetryMaxDelay: time.Minute})
	var ae *client.AccessError
	if !errors.As(err, &ae) || ae.Code != wire.ErrorRateLimited || ct.n.Load() != 1 || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("with 300 ms left and Retry-After 1000 s: %v after %d request(s) and %v, want the refusal at once", err, ct.n.Load(), time.Since(start))
	}
}

// TestClientRetriesOverloadedFrontThenConnects: a front that answers 503
// overloaded (as a node out of descriptors does) to the first requests,
// then passes them to a real node: Dial connects in one step and in two,
// each after the refusals (the two-step flow retried whole).
func TestClientRetriesOverloadedFrontThenConnects(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, _ *server.Deps) { c.ResultsDir = "" })
	node, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(node)
	var refuse atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Add(-1) >= 0 {
			w.Header().Set("Retry-After", "5")
			apierr.WriteNew(w, http.StatusServiceUnavailable, wire.ErrorOverloaded, "no room now")
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	tok := s.Token(t, "retry/c", "read", "write")
	for _, twoStep := range []bool{false, true} {
		refuse.Store(2)
		var ct countingTransport
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		c, err := client.Dial(ctx, front.URL, "retry/c", tok, &client.Options{
			HTTPClient: &http.Client{Transport: &ct}, TwoStep: twoStep, RetryMaxDelay: 50 * time.Millisecond,
		})
		cancel()
		if err != nil {
			t.Fatalf("two-step %v: %v", twoStep, err)
		}
		c.CloseNow()
		// Two refusals, then the connect: one request in one step, two
		// (the access request through the front, the websocket at the
		// node the code names) in two.
		want := int64(3)
		if twoStep {
			want = 4
		}
		if n := ct.n.Load(); n != want || refuse.Load() >= 0 {
			t.Errorf("two-step %v: %d requests, want %d after 2 refusals", twoStep, n, want)
		}
	}
}
