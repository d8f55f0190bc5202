package bench

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

func TestLatency(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Latency(ctx, LatencyOptions{
		URL: srv.PublicURL(), Secret: secret, Rate: 200, Size: 64, Duration: 300 * time.Millisecond, Warmup: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 59 || res.Sent > 61 || res.Received != res.Sent || res.Echoed != res.Sent || res.Lost != 0 || res.FirstError != "" {
		t.Fatalf("sent %d received %d echoed %d lost %d (%s)", res.Sent, res.Received, res.Echoed, res.Lost, res.FirstError)
	}
	ow, rt := res.OneWayUS, res.RoundTripUS
	// Each round trip contains its one-way trip, so every quantile is at
	// least as large.
	if !(0 < ow.P50 && ow.P50 <= ow.P99 && ow.P99 <= ow.Max && ow.P50 <= rt.P50 && ow.P99 <= rt.P99 && ow.Max <= rt.Max && rt.Max < 2e6) {
		t.Errorf("one-way %+v, round trip %+v", ow, rt)
	}
	b, _ := json.Marshal(&res)
	for _, f := range []string{`"scenario":"latency"`, `"one_way_us":{"p50"`, `"round_trip_us"`, `"lost":0`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("JSON lacks %s: %s", f, b)
		}
	}
	var sb strings.Builder
	if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "round trip") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
	if _, err := Latency(ctx, LatencyOptions{URL: "http://192.0.2.1:80", Secret: secret}); err == nil {
		t.Error("non-loopback URL accepted")
	}
}

func TestAccess(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Access(ctx, AccessOptions{URL: srv.PublicURL(), Secret: secret, Clients: 4, Sources: 3, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges == 0 || res.Errors != 0 || res.ExchangesPerSec <= 0 {
		t.Fatalf("exchanges %d errors %d (%s)", res.Exchanges, res.Errors, res.FirstError)
	}
	// The first, unmeasured cycle checks the relay before the run.
	if got := srv.Relay().Stats().Accepted; got != res.Exchanges+1 {
		t.Errorf("relay accepted %d connections, want %d", got, res.Exchanges+1)
	}
	for name, l := range map[string]LatencyUS{"access": res.AccessUS, "exchange": res.ExchangeUS, "close": res.CloseUS} {
		if !(0 < l.P50 && l.P50 <= l.P99 && l.P99 <= l.Max && l.Max <= res.TotalUS.Max) {
			t.Errorf("%s latency %+v (cycle max %v)", name, l, res.TotalUS.Max)
		}
	}
	var sb strings.Builder
	if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "per second") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}

	// The raw client.
	before := srv.Relay().Stats().Accepted
	res, err = Access(ctx, AccessOptions{URL: srv.PublicURL(), Secret: secret, Clients: 3, Sources: 2, Duration: 300 * time.Millisecond, Raw: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Client != "raw" || res.Exchanges == 0 || res.Errors != 0 {
		t.Fatalf("raw: exchanges %d errors %d (%s)", res.Exchanges, res.Errors, res.FirstError)
	}
	if got := srv.Relay().Stats().Accepted - before; got != res.Exchanges+1 {
		t.Errorf("raw: relay accepted %d connections, want %d", got, res.Exchanges+1)
	}
	if l := res.CloseUS; !(0 < l.P50 && l.Max <= res.TotalUS.Max) {
		t.Errorf("raw: close latency %+v", l)
	}

	// With a token for one topic, bounded by count.
	tok, err := mintToken(secret, srv.PublicURL(), time.Hour, func(c *auth.Claims) {
		c.Topic, c.Prefix, c.Scopes = "one/topic", client.DefaultPrefix, []string{auth.ScopeRead}
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err = Access(ctx, AccessOptions{URL: srv.PublicURL(), Token: tok, Topic: "one/topic", Clients: 2, Max: 5, Duration: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges != 5 || res.Errors != 0 {
		t.Errorf("exchanges %d errors %d (%s), want 5 and 0", res.Exchanges, res.Errors, res.FirstError)
	}

	// A token that does not grant the topic fails at once, clearly.
	_, err = Access(ctx, AccessOptions{URL: srv.PublicURL(), Token: tok, Topic: "other", Duration: time.Second})
	var ae *client.AccessError
	if !errors.As(err, &ae) || ae.Status != 403 {
		t.Errorf("got %v, want a 403 access error", err)
	}
	_, err = Access(ctx, AccessOptions{URL: srv.PublicURL(), Token: tok, Topic: "other", Duration: time.Second, Raw: true})
	var se *rawStatusError
	if !errors.As(err, &se) || se.status != 403 {
		t.Errorf("raw: got %v, want a 403", err)
	}
}

func TestSearchRate(t *testing.T) {
	const limit = 1234.0
	var rates []float64
	probe := func(n int, rate float64) (bool, error) {
		rates = append(rates, rate)
		return rate <= limit, nil
	}
	good, bad, err := searchRate(100, 20, 0.05, probe)
	if err != nil || good > limit || bad <= limit || bad > good*1.05 {
		t.Fatalf("good %v bad %v err %v; probes %v", good, bad, err, rates)
	}
	if rates[0] != 100 || rates[1] != 200 || rates[4] != 1600 || len(rates) > 10 {
		t.Errorf("probes %v: want doubling from 100 to 1600, then a few bisections", rates)
	}

	// Starting too high halves down; the probe count is bounded.
	rates = nil
	good, bad, _ = searchRate(100_000, 4, 0.05, probe)
	if len(rates) != 4 || good != 0 || rates[3] != 12_500 || bad != 12_500 {
		t.Errorf("good %v bad %v probes %v", good, bad, rates)
	}
	// Nothing passes: it stops at 1 msg/s.
	rates = nil
	good, _, _ = searchRate(4, 20, 0.05, func(int, float64) (bool, error) { rates = append(rates, 0); return false, nil })
	if good != 0 || len(rates) != 3 {
		t.Errorf("good %v after %d probes, want 0 after 3 (4, 2, 1)", good, len(rates))
	}
	if roundRate(123456) != 123000 || roundRate(0.5) != 0.5 || roundRate(1) != 1 {
		t.Errorf("roundRate: %v %v %v", roundRate(123456), roundRate(0.5), roundRate(1))
	}
}

func TestRateSearch(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var progress []RateProbe
	res, err := RateSearch(ctx, RateSearchOptions{
		Fanout:    FanoutOptions{URL: srv.PublicURL(), Secret: secret, Readers: 3, Size: 64, Warmup: -1},
		Window:    200 * time.Millisecond,
		Unpaced:   100 * time.Millisecond,
		Start:     50,
		MaxProbes: 3,
		MaxLate:   time.Second, // the race detector slows the writer
		MaxDrain:  5 * time.Second,
		Progress:  func(p RateProbe) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	// 50, 100 and 200 msg/s to 3 readers pass on any machine.
	if len(res.Probes) != 3 || len(progress) != 4 || res.BestRate != 200 || res.LowestFailRate != 0 {
		t.Fatalf("probes %+v, best %v, lowest failure %v", res.Probes, res.BestRate, res.LowestFailRate)
	}
	for i, want := range []float64{50, 100, 200} {
		if p := res.Probes[i]; p.Rate != want || !p.Pass || p.Result.Drops != 0 {
			t.Errorf("probe %d: %+v", i, p)
		}
	}
	if res.Unpaced.Result.DeliveredPerSec <= 0 || math.Abs(res.Fraction-res.BestDeliveredPerSec/res.Unpaced.Result.DeliveredPerSec) > 1e-9 || res.BestDeliveredPerSec != 600 {
		t.Errorf("unpaced %v, best %v, fraction %v", res.Unpaced.Result.DeliveredPerSec, res.BestDeliveredPerSec, res.Fraction)
	}
	var sb strings.Builder
	if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "highest zero-drop rate") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
	if ok, why := judgeProbe(&FanoutResult{Rate: 10, Drops: 3}, time.Second, time.Second); ok || !strings.Contains(why, "3 drops") {
		t.Errorf("judge: %v %q", ok, why)
	}
	late := 2e6
	if ok, why := judgeProbe(&FanoutResult{Rate: 10, WriterMaxLateUS: &late}, time.Second, time.Second); ok || !strings.Contains(why, "behind") {
		t.Errorf("judge late: %v %q", ok, why)
	}
	if ok, why := judgeProbe(&FanoutResult{Rate: 10, DrainSec: 2}, time.Second, time.Second); ok || !strings.Contains(why, "behind at the end") {
		t.Errorf("judge drain: %v %q", ok, why)
	}
	if ok, _ := judgeProbe(&FanoutResult{Rate: 10, DrainSec: 0.5}, time.Second, time.Second); !ok {
		t.Error("a clean probe failed")
	}
}

func TestFitTrend(t *testing.T) {
	ts := []float64{0, 30, 60, 90, 120, 150, 180}
	// Warm-up growth in the first sample only, then flat with noise: pass.
	flat := []float64{10, 100, 103, 98, 101, 99, 102}
	if tr := FitTrend(ts, flat, 0.10, 0); !tr.Pass || tr.Samples != 6 || math.Abs(tr.Mean-100.5) > 1e-9 {
		t.Errorf("flat: %+v", tr)
	}
	// +1 per 30 s is +20 per 10 min: over 10 % of a mean near 100.
	grow := []float64{10, 100, 101, 102, 103, 104, 105}
	tr := FitTrend(ts, grow, 0.10, 0)
	if tr.Pass || math.Abs(tr.GrowthPer10Min-20) > 1e-9 || math.Abs(tr.Limit-10.25) > 1e-9 {
		t.Errorf("growing: %+v", tr)
	}
	// The same growth under an absolute floor passes.
	if tr := FitTrend(ts, grow, 0.10, 25); !tr.Pass {
		t.Errorf("growing under the floor: %+v", tr)
	}
	// Shrinking passes.
	if tr := FitTrend(ts, []float64{1, 105, 104, 103, 102, 101, 100}, 0.10, 0); !tr.Pass || tr.SlopePerSec >= 0 {
		t.Errorf("shrinking: %+v", tr)
	}
	// Too few samples: no verdict.
	if tr := FitTrend(ts[:3], grow[:3], 0.10, 0); !tr.Pass || tr.Skipped == "" {
		t.Errorf("short: %+v", tr)
	}
}

func TestSoak(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var samples []SoakSample
	res, err := Soak(ctx, SoakOptions{
		URL: srv.PublicURL(), Secret: secret, ServerPID: os.Getpid(),
		Duration: 1500 * time.Millisecond, Sample: 500 * time.Millisecond,
		Readers: 3, Rate: 50, Size: 64, ChurnRate: 20, ChurnHold: 50 * time.Millisecond,
		ExchangeRate: 20, DenyEvery: 300 * time.Millisecond,
		Progress: func(s SoakSample) { samples = append(samples, s) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 4 || len(samples) != 4 {
		t.Fatalf("%d samples (%d reported), want 4 (t = 0, 0.5, 1, 1.5 s)", len(res.Samples), len(samples))
	}
	for _, s := range res.Samples {
		if s.RSSBytes <= 0 || s.Goroutines <= 0 {
			t.Errorf("sample %+v", s)
		}
	}
	if res.Errors != 0 || res.Churned == 0 || res.Exchanges == 0 || res.Denies == 0 {
		t.Fatalf("churned %d exchanges %d revocations %d errors %d: %v", res.Churned, res.Exchanges, res.Denies, res.Errors, res.FirstErrors)
	}
	if res.Fanout == nil || res.Fanout.Delivered == 0 || res.Fanout.ReaderErrors != 0 {
		t.Fatalf("fan-out %+v (%s)", res.Fanout, res.FanoutError)
	}
	if res.RSS.Samples != 3 || res.Goroutines.Samples != 3 {
		t.Errorf("trends %+v %+v", res.RSS, res.Goroutines)
	}
	// The verdict follows the trends (1.5 s is too short to judge growth).
	if res.Pass != (res.RSS.Pass && res.Goroutines.Pass) {
		t.Errorf("pass %v with trends %v %v, failures %v", res.Pass, res.RSS.Pass, res.Goroutines.Pass, res.Failures)
	}
	var sb strings.Builder
	if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "goroutines") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
	if _, err := Soak(ctx, SoakOptions{URL: srv.PublicURL()}); err == nil {
		t.Error("soak without a secret accepted")
	}
}
