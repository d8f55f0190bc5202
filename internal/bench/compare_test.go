package bench

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestNewCompareResultRatios(t *testing.T) {
	b := TCPBaselineResult{FanoutResult: FanoutResult{Rate: 1000, DeliveredPerSec: 100_000, LatencyUS: LatencyUS{P99: 200}}}
	r := FanoutResult{Rate: 1000, DeliveredPerSec: 25_000, LatencyUS: LatencyUS{P99: 1000}}
	c := NewCompareResult(b, r)
	if c.Ratio != 0.25 || c.P99Ratio == nil || *c.P99Ratio != 5 {
		t.Errorf("ratio %v, p99 ratio %v; want 0.25 and 5", c.Ratio, c.P99Ratio)
	}

	// Unpaced: no p99 ratio.
	b.Rate, r.Rate = 0, 0
	c = NewCompareResult(b, r)
	if c.Ratio != 0.25 || c.P99Ratio != nil {
		t.Errorf("unpaced: ratio %v, p99 ratio %v; want 0.25 and none", c.Ratio, c.P99Ratio)
	}
	js, err := json.Marshal(&c)
	if err != nil || strings.Contains(string(js), "p99_ratio") {
		t.Errorf("unpaced JSON %s: %v", js, err)
	}

	// A baseline that delivered nothing gives 0, never Inf or NaN (not JSON).
	c = NewCompareResult(TCPBaselineResult{FanoutResult: FanoutResult{Rate: 10}}, FanoutResult{Rate: 10, DeliveredPerSec: 5, LatencyUS: LatencyUS{P99: 3}})
	if c.Ratio != 0 || c.P99Ratio != nil {
		t.Errorf("empty baseline: ratio %v, p99 ratio %v", c.Ratio, c.P99Ratio)
	}
	if _, err := json.Marshal(&c); err != nil {
		t.Error(err)
	}
}

func TestCompare(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Compare(ctx, FanoutOptions{
		URL: srv.PublicURL(), Secret: secret, Readers: 3, Size: 64,
		Rate: 300, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond,
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, r := c.Baseline, c.Relay
	if b.Scenario != "tcp-baseline" || b.Readers != 3 || r.Readers != 3 || b.Size != 64 || r.Size != 64 || b.Rate != 300 || r.Rate != 300 {
		t.Errorf("options differ: baseline %+v, relay %+v", b, r)
	}
	if b.QueueBytes != DefaultBaselineQueueBytes {
		t.Errorf("queue %d", b.QueueBytes)
	}
	for name, x := range map[string]FanoutResult{"baseline": b.FanoutResult, "relay": r} {
		if x.Sent == 0 || x.Delivered != 3*x.Sent || x.Drops != 0 {
			t.Errorf("%s: sent %d delivered %d drops %d", name, x.Sent, x.Delivered, x.Drops)
		}
	}
	want := r.DeliveredPerSec / b.DeliveredPerSec
	if math.Abs(c.Ratio-want) > 1e-12 || c.Ratio < 0.9 || c.Ratio > 1.1 {
		// Paced at the same rate and nothing lost, both deliver the same.
		t.Errorf("ratio %v, want %v (about 1)", c.Ratio, want)
	}
	if c.P99Ratio == nil || math.Abs(*c.P99Ratio-r.LatencyUS.P99/b.LatencyUS.P99) > 1e-12 {
		t.Errorf("p99 ratio %v, want relay p99 %v / baseline p99 %v", c.P99Ratio, r.LatencyUS.P99, b.LatencyUS.P99)
	}

	js, err := json.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"baseline", "relay", "ratio", "p99_ratio"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, js)
		}
	}
	var sb strings.Builder
	if err := c.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "tcp-baseline") || !strings.Contains(sb.String(), "relay / baseline") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
}

func TestCompareChecksOptionsFirst(t *testing.T) {
	start := time.Now()
	_, err := Compare(context.Background(), FanoutOptions{URL: "http://192.0.2.1:8080", Secret: []byte("x"), Duration: time.Hour}, 0)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("got %v, want a loopback error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("the baseline ran before the options were checked")
	}
}

// TestCompareRounds: rounds alternate which side runs first, and the
// medians are those of the rounds' ratios.
func TestCompareRounds(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := CompareRounds(ctx, FanoutOptions{
		URL: srv.PublicURL(), Secret: secret, Readers: 2, Size: 64,
		Rate: 200, Duration: 150 * time.Millisecond, Warmup: 50 * time.Millisecond,
	}, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rounds) != 3 || c.Rounds[0].RelayFirst || !c.Rounds[1].RelayFirst || c.Rounds[2].RelayFirst {
		t.Fatalf("rounds %d, relay first: %v %v %v", len(c.Rounds), c.Rounds[0].RelayFirst, c.Rounds[1].RelayFirst, c.Rounds[2].RelayFirst)
	}
	var ratios, p99s []float64
	for i, r := range c.Rounds {
		if r.Baseline.Delivered == 0 || r.Relay.Delivered == 0 || r.P99Ratio == nil {
			t.Fatalf("round %d: %+v", i+1, r)
		}
		ratios, p99s = append(ratios, r.Ratio), append(p99s, *r.P99Ratio)
	}
	if c.MedianRatio != median(ratios) || c.MedianP99Ratio == nil || *c.MedianP99Ratio != median(p99s) {
		t.Errorf("medians %v %v of %v %v", c.MedianRatio, c.MedianP99Ratio, ratios, p99s)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 1..4: %v", m)
	}
	var out strings.Builder
	if err := c.WriteTable(&out); err != nil || !strings.Contains(out.String(), "median") {
		t.Errorf("table: %v\n%s", err, out.String())
	}
}
