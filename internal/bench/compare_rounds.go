package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// CompareRoundsResult is CompareRounds' outcome: each round's comparison
// and the medians of their ratios.
type CompareRoundsResult struct {
	Rounds []CompareRound `json:"rounds"`
	// MedianRatio and MedianP99Ratio are the medians of the rounds'
	// Ratio and P99Ratio (the latter for paced runs only).
	MedianRatio    float64  `json:"median_ratio"`
	MedianP99Ratio *float64 `json:"median_p99_ratio,omitempty"`
}

// CompareRound is one round: both runs, which ran first, and the 1-minute
// load average of the machine before each run (0 where /proc/loadavg
// cannot be read).
type CompareRound struct {
	CompareResult
	RelayFirst   bool    `json:"relay_first"`
	LoadBaseline float64 `json:"load_baseline"`
	LoadRelay    float64 `json:"load_relay"`
}

// CompareRounds runs the baseline and the relay (as Compare does) rounds
// times, the baseline first in odd rounds and the relay first in even
// ones, and gives the medians of the rounds' ratios. On a machine shared
// with other work the load moves between two runs, and so does one
// round's ratio; the median of rounds that alternate which side runs first
// judges the relay against the machine better than one round.
func CompareRounds(ctx context.Context, opts FanoutOptions, queueBytes, rounds int) (CompareRoundsResult, error) {
	if rounds < 1 {
		return CompareRoundsResult{}, fmt.Errorf("bench: compare: %d rounds: want at least 1", rounds)
	}
	var res CompareRoundsResult
	var ratios, p99Ratios []float64
	for i := range rounds {
		round := CompareRound{RelayFirst: i%2 == 1}
		var err error
		round.CompareResult, round.LoadBaseline, round.LoadRelay, err = compareOnce(ctx, opts, queueBytes, round.RelayFirst)
		if err != nil {
			return res, fmt.Errorf("round %d: %w", i+1, err)
		}
		res.Rounds = append(res.Rounds, round)
		ratios = append(ratios, round.Ratio)
		if round.P99Ratio != nil {
			p99Ratios = append(p99Ratios, *round.P99Ratio)
		}
	}
	res.MedianRatio = median(ratios)
	if len(p99Ratios) == len(res.Rounds) {
		m := median(p99Ratios)
		res.MedianP99Ratio = &m
	}
	return res, nil
}

// median returns the median of xs (the mean of the middle two for an even
// count), sorting xs.
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// loadAverage1 is the machine's 1-minute load average, 0 if unknown.
func loadAverage1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseFloat(f, 64)
	return v
}

// WriteTable writes one line per round and the medians. A single round is
// written as Compare's result is, with the load averages after it.
func (c *CompareRoundsResult) WriteTable(w io.Writer) error {
	if len(c.Rounds) == 1 {
		r := c.Rounds[0]
		if err := r.CompareResult.WriteTable(w); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "load average  %.2f before the baseline, %.2f before the relay\n", r.LoadBaseline, r.LoadRelay)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	first := c.Rounds[0].Baseline
	fmt.Fprintf(tw, "scenario\t%s, %d B, rate %g msg/s; %d rounds, the baseline and the relay in alternating order\n", first.shape(), first.Size, first.Rate, len(c.Rounds))
	fmt.Fprintln(tw, "round\tfirst\tbaseline msg/s\trelay msg/s\tratio\tbaseline p99 µs\trelay p99 µs\tp99 ratio\tload (baseline, relay)")
	for i, r := range c.Rounds {
		first := "baseline"
		if r.RelayFirst {
			first = "relay"
		}
		p99 := "-"
		if r.P99Ratio != nil {
			p99 = fmt.Sprintf("%.2f", *r.P99Ratio)
		}
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.0f\t%.3f\t%s\t%s\t%s\t%.1f, %.1f\n", i+1, first, r.Baseline.DeliveredPerSec, r.Relay.DeliveredPerSec,
			r.Ratio, us(r.Baseline.LatencyUS.P99), us(r.Relay.LatencyUS.P99), p99, r.LoadBaseline, r.LoadRelay)
	}
	fmt.Fprintf(tw, "median\t\t\t\t%.3f\t\t\t", c.MedianRatio)
	if c.MedianP99Ratio != nil {
		fmt.Fprintf(tw, "%.2f", *c.MedianP99Ratio)
	}
	fmt.Fprintln(tw)
	return tw.Flush()
}
