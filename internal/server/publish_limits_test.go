package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// publishAnswer is what a publish request got.
type publishAnswer struct {
	status     int
	code       wire.ErrorCode // of a refusal
	retryAfter string
	header     http.Header
}

// publishFrom posts one text message to topic with tok, from the client
// address xff names (when not empty: the node must trust 127.0.0.1 as a
// proxy), with Origin origin (when not empty).
func publishFrom(t *testing.T, s *servertest.Server, tok, topic, xff, origin string) publishAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+wire.PublishPath+"?topic="+topic, strings.NewReader("m"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "text/plain")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := publishAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), header: resp.Header}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code wire.ErrorCode } `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" {
			t.Fatalf("status %d without a JSON error: %s", resp.StatusCode, b)
		}
		a.code = e.Error.Code
	}
	return a
}

// writerToken is a token that may write topic, told apart from the others
// by its id.
func writerToken(t *testing.T, s *servertest.Server, topic, id string) string {
	c := s.Claims(topic, auth.ScopeWrite)
	c.ID = id
	return s.Sign(t, c)
}

// expectRateLimited checks a 429 rate_limited with a Retry-After of whole
// seconds, at least 1.
func expectRateLimited(t *testing.T, what string, a publishAnswer) {
	t.Helper()
	if a.status != http.StatusTooManyRequests || a.code != wire.ErrorRateLimited {
		t.Fatalf("%s: %d %s, want 429 rate_limited", what, a.status, a.code)
	}
	if n, err := strconv.Atoi(a.retryAfter); err != nil || n < 1 {
		t.Fatalf("%s: Retry-After %q, want whole seconds ≥ 1", what, a.retryAfter)
	}
}

// TestHTTPPublishLimitPerToken: a token over its publish burst is refused
// with 429 and Retry-After, while another token from the same address is
// not; the refusal is counted in the metrics.
func TestHTTPPublishLimitPerToken(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, d *server.Deps) {
		c.MetricsListen = "127.0.0.1:0"
		// One request per 100 s after a burst of 2: the third is refused
		// however slowly the test runs.
		c.Limits.Publish = access.PublishLimits{PerToken: 0.01, TokenBurst: 2, PerAddress: 1000}
	})
	busy, other := writerToken(t, s, "lab", "busy"), writerToken(t, s, "lab", "other")
	for i := range 2 {
		if a := publishFrom(t, s, busy, "lab", "", ""); a.status != http.StatusOK {
			t.Fatalf("request %d of the burst: %d %s", i+1, a.status, a.code)
		}
	}
	expectRateLimited(t, "third request of the token", publishFrom(t, s, busy, "lab", "", ""))
	if a := publishFrom(t, s, other, "lab", "", ""); a.status != http.StatusOK {
		t.Fatalf("another token: %d %s, want 200", a.status, a.code)
	}
	m := scrapeMetrics(t, s)
	for _, want := range []string{`switchboard_publish_requests_total{outcome="ok"} 3`, `switchboard_publish_requests_total{outcome="rate_limited"} 1`,
		`switchboard_publish_messages_total{prefix="lab"} 3`, `switchboard_publish_bytes_total{prefix="lab"} 3`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestHTTPPublishLimitPerAddress: behind a trusted proxy, each client
// address the proxy names has its own publish bucket whatever the tokens:
// a third token from a busy address is refused, another address is not.
func TestHTTPPublishLimitPerAddress(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, d *server.Deps) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.Limits.Publish = access.PublishLimits{PerAddress: 0.01, AddressBurst: 2, PerToken: 1000}
	})
	const busy, quiet = "203.0.113.7", "203.0.113.8"
	for i := range 2 {
		if a := publishFrom(t, s, writerToken(t, s, "lab", "t"+strconv.Itoa(i)), "lab", busy, ""); a.status != http.StatusOK {
			t.Fatalf("request %d of the burst: %d %s", i+1, a.status, a.code)
		}
	}
	expectRateLimited(t, "third token from the same address", publishFrom(t, s, writerToken(t, s, "lab", "t2"), "lab", busy, ""))
	// The address is refused before its token is looked at.
	expectRateLimited(t, "no valid token from the same address", publishFrom(t, s, "not-a-token", "lab", busy, ""))
	if a := publishFrom(t, s, writerToken(t, s, "lab", "t3"), "lab", quiet, ""); a.status != http.StatusOK {
		t.Fatalf("another address: %d %s, want 200", a.status, a.code)
	}
}

// TestHTTPPublishLimitIgnoresUntrustedForwardedFor: without --trusted-proxy
// a client cannot escape its address's bucket by naming other addresses in
// X-Forwarded-For.
func TestHTTPPublishLimitIgnoresUntrustedForwardedFor(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, d *server.Deps) {
		c.Limits.Publish = access.PublishLimits{PerAddress: 0.01, AddressBurst: 2, PerToken: 1000}
	})
	for i := range 2 {
		if a := publishFrom(t, s, writerToken(t, s, "lab", "t"+strconv.Itoa(i)), "lab", "198.51.100."+strconv.Itoa(i+1), ""); a.status != http.StatusOK {
			t.Fatalf("request %d of the burst: %d %s", i+1, a.status, a.code)
		}
	}
	expectRateLimited(t, "a third address named in X-Forwarded-For", publishFrom(t, s, writerToken(t, s, "lab", "t2"), "lab", "198.51.100.3", ""))
}

// TestHTTPPublishCORS: a browser's preflight of a publish request gets
// the access endpoint's answer for an allowed origin and 403 for another;
// the publish answer names the allowed origin and exposes Retry-After.
func TestHTTPPublishCORS(t *testing.T) {
	const allowed = "https://lab.example.org"
	s := servertest.Start(t, func(c *server.Config, d *server.Deps) { c.AllowedOrigins = []string{allowed} })
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, s.URL+wire.PublishPath, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 400 && !json.Valid(b) {
			t.Fatalf("preflight from %s: %d without a JSON body: %s", origin, resp.StatusCode, b)
		}
		return resp
	}
	resp := preflight(allowed)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("preflight from an allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := preflight("https://evil.example"); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from another origin: %d %v, want 403 without Allow-Origin", resp.StatusCode, resp.Header)
	}
	a := publishFrom(t, s, writerToken(t, s, "lab", "w"), "lab", "", allowed)
	if a.status != http.StatusOK || a.header.Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(a.header.Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Fatalf("publish from an allowed origin: %d %v", a.status, a.header)
	}
	if a := publishFrom(t, s, writerToken(t, s, "lab", "w"), "lab", "", "https://evil.example"); a.status != http.StatusForbidden || a.code != wire.ErrorOriginForbidden {
		t.Fatalf("publish from another origin: %d %s, want 403 origin_forbidden", a.status, a.code)
	}
}

// TestHTTPPublishCountedAsMessagesIn: a message published over HTTP is
// counted in the relay's messages and bytes in, as a websocket writer's
// is, so /status, the stats topic and the metrics agree; the metrics count
// it by topic prefix, and prefixes past the bound share one label.
func TestHTTPPublishCountedAsMessagesIn(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, d *server.Deps) { c.MetricsListen = "127.0.0.1:0" })
	r := s.Dial(t, "lab/cam", auth.ScopeRead)
	before := s.Relay().Stats()
	tok := writerToken(t, s, "*", "w")
	if a := publishFrom(t, s, tok, "lab/cam", "", ""); a.status != http.StatusOK {
		t.Fatalf("publish: %d %s", a.status, a.code)
	}
	if _, got := readMessage(t, r); got != "m" {
		t.Fatalf("reader got %q", got)
	}
	after := s.Relay().Stats()
	if after.MessagesIn-before.MessagesIn != 1 || after.BytesIn-before.BytesIn != 1 {
		t.Fatalf("messages in %d → %d, bytes in %d → %d; want one more message of 1 byte", before.MessagesIn, after.MessagesIn, before.BytesIn, after.BytesIn)
	}
	// More distinct first segments than the metrics tell apart, in
	// batches: past the bound, they share the label "*".
	var batch bytes.Buffer
	n := 0
	for n < access.MaxPublishPrefixLabels+10 {
		batch.Reset()
		batch.WriteString("[")
		for i := range wire.MaxPublishBatch {
			if i > 0 {
				batch.WriteString(",")
			}
			batch.WriteString(`{"topic":"p` + strconv.Itoa(n) + `/x","data":"ab"}`)
			n++
		}
		batch.WriteString("]")
		if st, code := postPublish(t, s, tok, "", "application/json", batch.Bytes()); st != http.StatusOK {
			t.Fatalf("batch: %d %s", st, code)
		}
	}
	m := scrapeMetrics(t, s)
	labels := strings.Count(m, "switchboard_publish_messages_total{prefix=")
	if labels != access.MaxPublishPrefixLabels+1 {
		t.Errorf("%d prefix labels after %d prefixes, want %d and %q", labels, n+1, access.MaxPublishPrefixLabels, access.PublishOtherPrefix)
	}
	other := n + 1 - access.MaxPublishPrefixLabels // lab, then p0… take the labels
	if want := `switchboard_publish_messages_total{prefix="*"} ` + strconv.Itoa(other); !strings.Contains(m, want) {
		t.Errorf("metrics lack %s", want)
	}
	if want := `switchboard_messages_total{direction="in"} ` + strconv.Itoa(int(before.MessagesIn)+n+1); !strings.Contains(m, want) {
		t.Errorf("metrics lack %s", want)
	}
}

// scrapeMetrics reads the node's metrics listener.
func scrapeMetrics(t *testing.T, s *servertest.Server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}
