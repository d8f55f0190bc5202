package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
)

// loadGeneratorLimits lift, for servers the bench tests start in process,
// the limits meant for one client among many, as loadGeneratorArgs does for
// the server child process.
var loadGeneratorLimits = server.Limits{ConnsPerToken: 10_000_000, ConnsPerSubject: 10_000_000, RequestsPerSecond: 10_000_000, FDReserve: 64,
	Publish: access.PublishLimits{PerToken: 10_000_000, PerAddress: 10_000_000}}

// loadGeneratorWaits is the jobs WAIT limit per subject for those servers.
const loadGeneratorWaits = 1_000_000

// startServer starts an in-process node (servertest, with the jobs API)
// with the limits lifted for load generators, and returns it with its
// token secret.
func startServer(t *testing.T) (*server.Server, []byte) {
	t.Helper()
	s := servertest.Start(t, func(c *server.Config, d *server.Deps) {
		c.Limits = loadGeneratorLimits
		c.Jobs.MaxWaitsPerSubject = loadGeneratorWaits
		// Paced rates are measured here: the server's, without the
		// OpenAPI check of every request (the other tests do that).
		d.Middleware = nil
	})
	return s.Server, s.Config.Secret
}

func TestFanoutPaced(t *testing.T) {
	srv, secret := startServer(t)
	for _, rc := range []string{"", ReaderClientPkg} {
		t.Run("reader client "+rc, func(t *testing.T) { testFanoutPaced(t, srv.PublicURL(), secret, rc) })
	}
}

func testFanoutPaced(t *testing.T, url string, secret []byte, readerClient string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Fanout(ctx, FanoutOptions{
		URL: url, Secret: secret, Readers: 5, Size: 100, ReaderClient: readerClient,
		Rate: 200, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := cmp.Or(readerClient, ReaderClientLean); res.ReaderClient != want {
		t.Errorf("reader client %q, want %q", res.ReaderClient, want)
	}
	// 200 msg/s for 300 ms, on a schedule: 60 messages (±1 at the edges).
	if res.Sent < 59 || res.Sent > 61 {
		t.Errorf("sent %d, want about 60", res.Sent)
	}
	if res.Delivered != res.Sent*5 {
		t.Errorf("delivered %d, want sent × readers = %d", res.Delivered, res.Sent*5)
	}
	// Without a backlog, what arrived while measuring is what was sent
	// while measuring, give or take the messages latency moves across the
	// window's edges.
	if d := int64(res.ReceivedInWindow) - int64(res.Delivered); res.ReceivedInWindow == 0 || d < -100 || d > 100 {
		t.Errorf("received in the window %d, want about the %d delivered", res.ReceivedInWindow, res.Delivered)
	}
	if res.Drops != 0 || res.Gaps != 0 || res.Reordered != 0 || res.Incomplete != 0 || res.ReaderErrors != 0 {
		t.Errorf("drops %d gaps %d reordered %d incomplete %d errors %d (%s), want none",
			res.Drops, res.Gaps, res.Reordered, res.Incomplete, res.ReaderErrors, res.FirstError)
	}
	if res.DurationSec != 0.3 {
		t.Errorf("duration %v s, want the scheduled 0.3", res.DurationSec)
	}
	l := res.LatencyUS
	if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max && l.Max < 2e6) {
		t.Errorf("latency quantiles not sane: %+v", l)
	}
	if res.MBPerSec <= 0 || res.DeliveredPerSec < 900 {
		t.Errorf("rates: %v msg/s, %v MB/s", res.DeliveredPerSec, res.MBPerSec)
	}

	b, err := json.Marshal(&res)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"delivered_per_sec"`, `"mb_per_sec"`, `"latency_us":{"p50"`, `"p999"`, `"drops"`, `"duration_sec"`, `"url"`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON lacks %s: %s", field, b)
		}
	}
	var sb strings.Builder
	if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "delivered") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
}

func TestFanoutUnpacedCountsAgree(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Fanout(ctx, FanoutOptions{
		URL: srv.PublicURL(), Secret: secret, Readers: 3, Size: 64,
		Duration: 100 * time.Millisecond, Warmup: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 {
		t.Fatal("nothing sent")
	}
	if res.Delivered+res.Drops != res.Sent*3 {
		t.Errorf("delivered %d + drops %d != sent %d × 3", res.Delivered, res.Drops, res.Sent)
	}
	if res.Reordered != 0 || res.Incomplete != 0 || res.ReaderErrors != 0 {
		t.Errorf("reordered %d incomplete %d errors %d (%s)", res.Reordered, res.Incomplete, res.ReaderErrors, res.FirstError)
	}
}

func TestFanoutRefusesUnknownReaderClient(t *testing.T) {
	_, err := Fanout(context.Background(), FanoutOptions{URL: "http://127.0.0.1:1", Secret: []byte("x"), ReaderClient: "fast"})
	if err == nil || !strings.Contains(err.Error(), `reader client "fast"`) {
		t.Fatalf("err = %v, want the reader client named", err)
	}
}

func TestFanoutRefusesNonLoopback(t *testing.T) {
	_, err := Fanout(context.Background(), FanoutOptions{URL: "http://192.0.2.1:8080", Secret: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("got %v, want a loopback error", err)
	}
	for _, u := range []string{"http://127.0.0.1:1", "http://localhost:1", "ws://[::1]:1"} {
		if err := CheckLoopbackURL(u); err != nil {
			t.Errorf("CheckLoopbackURL(%s): %v", u, err)
		}
	}
}

func TestProcStats(t *testing.T) {
	if _, err := ProcCPU(1 << 30); err == nil {
		t.Error("ProcCPU of a missing process: want an error")
	}
	if _, err := ProcPeakRSS(os.Getpid()); err != nil {
		t.Errorf("ProcPeakRSS(self): %v", err)
	}
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Errorf("ProcCPU(self): %v", err)
	}
}

func TestMintToken(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	tok, err := MintToken(secret, "http://127.0.0.1:9/", "a/b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	key, err := auth.NewHMACKey("HS256", secret)
	if err != nil {
		t.Fatal(err)
	}
	c, err := auth.NewVerifier(key, "http://127.0.0.1:9", auth.VerifierOptions{}).Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Topic != "a/b" || c.Prefix != "session" || !c.HasScope("read") || !c.HasScope("write") ||
		time.Until(c.Expiry()) <= 0 || time.Until(c.Expiry()) > time.Minute+time.Second || c.IssuedAt == nil {
		t.Errorf("claims %+v", c)
	}
}
