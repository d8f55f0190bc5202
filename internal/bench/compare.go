package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
)

// CompareResult is the outcome of Compare: the same fan-out over plain TCP
// (the machine's limit) and through the relay.
type CompareResult struct {
	Baseline TCPBaselineResult `json:"baseline"`
	Relay    FanoutResult      `json:"relay"`
	// Ratio is relay delivered/s over baseline delivered/s (0 if the
	// baseline delivered nothing).
	Ratio float64 `json:"ratio"`
	// P99Ratio is relay p99 latency over baseline p99 latency, for paced
	// runs only (unpaced latencies measure queueing, not the path).
	P99Ratio *float64 `json:"p99_ratio,omitempty"`
}

// NewCompareResult puts the two results together and computes the ratios.
func NewCompareResult(baseline TCPBaselineResult, relay FanoutResult) CompareResult {
	c := CompareResult{Baseline: baseline, Relay: relay}
	if b := baseline.DeliveredPerSec; b > 0 {
		c.Ratio = relay.DeliveredPerSec / b
	}
	if relay.Rate > 0 && baseline.Rate > 0 && baseline.LatencyUS.P99 > 0 {
		r := relay.LatencyUS.P99 / baseline.LatencyUS.P99
		c.P99Ratio = &r
	}
	return c
}

// Compare runs TCPBaseline with the options of opts (see
// BaselineOptionsFrom; queueBytes bounds the hub's queues, 0 for the
// default), then Fanout with opts, one after the other, and compares them.
func Compare(ctx context.Context, opts FanoutOptions, queueBytes int) (CompareResult, error) {
	c, _, _, err := compareOnce(ctx, opts, queueBytes, false)
	return c, err
}

// compareOnce is Compare, the relay first with relayFirst, also giving the
// load average before each run.
func compareOnce(ctx context.Context, opts FanoutOptions, queueBytes int, relayFirst bool) (c CompareResult, loadBaseline, loadRelay float64, err error) {
	if _, err := opts.withDefaults(); err != nil { // fail before the first run
		return CompareResult{}, 0, 0, err
	}
	bopts := BaselineOptionsFrom(opts)
	bopts.QueueBytes = queueBytes
	var (
		baseline TCPBaselineResult
		relay    FanoutResult
	)
	runBaseline := func() error {
		runtime.GC() // not the other run's garbage in this one
		loadBaseline = loadAverage1()
		var err error
		if baseline, err = TCPBaseline(ctx, bopts); err != nil {
			return fmt.Errorf("tcp-baseline: %w", err)
		}
		return nil
	}
	runRelay := func() error {
		runtime.GC()
		loadRelay = loadAverage1()
		var err error
		if relay, err = Fanout(ctx, opts); err != nil {
			return fmt.Errorf("fanout: %w", err)
		}
		return nil
	}
	runs := []func() error{runBaseline, runRelay}
	if relayFirst {
		runs[0], runs[1] = runRelay, runBaseline
	}
	for _, run := range runs {
		if err := run(); err != nil {
			return CompareResult{Baseline: baseline, Relay: relay}, loadBaseline, loadRelay, err
		}
	}
	return NewCompareResult(baseline, relay), loadBaseline, loadRelay, nil
}

// WriteTable writes both results and the ratios as human-readable tables.
func (c *CompareResult) WriteTable(w io.Writer) error {
	fmt.Fprintln(w, "== tcp-baseline ==")
	if err := c.Baseline.WriteTable(w); err != nil {
		return err
	}
	fmt.Fprintln(w, "\n== fanout (relay) ==")
	if err := c.Relay.WriteTable(w); err != nil {
		return err
	}
	fmt.Fprintln(w, "\n== relay / baseline ==")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "delivered/s\t%.3f (%.0f / %.0f msg/s)\n", c.Ratio, c.Relay.DeliveredPerSec, c.Baseline.DeliveredPerSec)
	if c.P99Ratio != nil {
		fmt.Fprintf(tw, "p99 latency\t%.2f (%s / %s µs)\n", *c.P99Ratio, us(c.Relay.LatencyUS.P99), us(c.Baseline.LatencyUS.P99))
	}
	return tw.Flush()
}

// WriteTable writes r as a human-readable table.
func (r *TCPBaselineResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rate := "unpaced"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%g msg/s", r.Rate)
	}
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	if r.Writers <= 1 && r.Topics <= 1 {
		row("scenario", "tcp-baseline: 1 writer, %d readers, length-prefixed TCP through an in-process hub", r.Readers)
	} else {
		row("scenario", "tcp-baseline: %s, length-prefixed TCP through an in-process hub", r.shape())
	}
	row("hub", "%s (queue %d B per reader, drop oldest)", r.URL, r.QueueBytes)
	row("message size", "%d B", r.Size)
	row("rate", "%s", rate)
	row("measured", "%.3f s (after %.3f s warm-up; connect %.3f s, drain %.3f s)", r.DurationSec, r.WarmupSec, r.ConnectSec, r.DrainSec)
	row("sent", "%d (%.0f msg/s)", r.Sent, r.SentPerSec)
	row("delivered", "%d (%.0f msg/s, %.1f MB/s); hub wrote %d", r.Delivered, r.DeliveredPerSec, r.MBPerSec, r.HubDelivered)
	if r.DrainSec > 0.1*r.DurationSec && r.DeliveredPerSecWithDrain > 0 {
		row("", "%.0f msg/s counting the %.1f s drain: readers were far behind at the end", r.DeliveredPerSecWithDrain, r.DrainSec)
	}
	l := r.LatencyUS
	row("latency µs", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s", us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max))
	row("drops", "%d (%.2f%% of expected; hub dropped %d), gaps %d, reordered %d", r.Drops, pct(r.Drops, r.Sent*uint64(r.Readers)), r.HubDropped, r.Gaps, r.Reordered)
	if r.Incomplete > 0 || r.ReaderErrors > 0 {
		row("readers", "%d incomplete at the end of the drain, %d failed", r.Incomplete, r.ReaderErrors)
	}
	if r.FirstError != "" {
		row("first error", "%s", r.FirstError)
	}
	row("CPU", "%.2f s (%.0f%% of one core), hub and clients: one process", r.ClientCPUSec, 100*r.ClientCPUSec/r.DurationSec)
	return tw.Flush()
}
