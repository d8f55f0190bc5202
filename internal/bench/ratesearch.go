package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Defaults of RateSearchOptions.
const (
	DefaultRateWindow    = 30 * time.Second
	DefaultRateUnpaced   = 10 * time.Second
	DefaultRateMaxProbes = 10
	DefaultRateTolerance = 0.05
	DefaultRateMaxLate   = 100 * time.Millisecond
	DefaultRateMaxDrain  = time.Second
)

// RateSearchOptions configure RateSearch.
type RateSearchOptions struct {
	// Fanout is the scenario probed (URL, token or secret, topic, readers,
	// writers, topics, size, warm-up, drain, server); its Rate and Duration
	// are set by the search.
	Fanout FanoutOptions
	// Window is each paced probe's measured period (default 30 s).
	Window time.Duration
	// Unpaced is the duration of the unpaced run the result is compared
	// with (default 10 s).
	Unpaced time.Duration
	// Start is the first rate probed, per writer, in messages per second
	// (default: an eighth of the unpaced run's delivered rate per reader
	// and writer, at least 1).
	Start float64
	// MaxProbes bounds the paced probes (default 10).
	MaxProbes int
	// Tolerance ends the search when the lowest failing rate is within
	// this fraction above the highest passing one (default 0.05).
	Tolerance float64
	// MaxLate fails a probe whose writers fell further behind their
	// schedule than this (default 100 ms): the rate was not what was asked.
	MaxLate time.Duration
	// MaxDrain fails a probe whose readers needed longer than this after
	// the writers' end to receive everything (default 1 s): the relay's
	// queues were hiding a backlog that a longer window would turn into
	// drops.
	MaxDrain time.Duration
	// Progress, if set, is called after the unpaced run (probe number 0)
	// and after each probe.
	Progress func(p RateProbe)
}

// RateProbe is one fan-out run of the search.
type RateProbe struct {
	N      int          `json:"n"`    // 0 for the unpaced run
	Rate   float64      `json:"rate"` // per writer; 0 unpaced
	Pass   bool         `json:"pass"`
	Reason string       `json:"reason,omitempty"` // why it failed
	Result FanoutResult `json:"result"`
}

// RateSearchResult is the outcome of RateSearch.
type RateSearchResult struct {
	Scenario  string  `json:"scenario"` // "rate-search"
	URL       string  `json:"url"`
	Readers   int     `json:"readers"` // per topic
	Writers   int     `json:"writers"`
	Topics    int     `json:"topics"`
	Size      int     `json:"size"`
	WindowSec float64 `json:"window_sec"`
	// Unpaced is the unpaced run; UnpacedRate its delivered messages/s
	// per reader and writer, the paced rate it corresponds to.
	Unpaced     RateProbe   `json:"unpaced"`
	UnpacedRate float64     `json:"unpaced_rate"`
	Probes      []RateProbe `json:"probes"`
	// BestRate is the highest passing rate per writer (0 if none passed),
	// BestDeliveredPerSec the deliveries/s of that probe, and Fraction their
	// ratio to the unpaced run's delivered/s. LowestFailRate is the lowest
	// failing rate (0 if none failed).
	BestRate            float64 `json:"best_rate"`
	BestDeliveredPerSec float64 `json:"best_delivered_per_sec"`
	Fraction            float64 `json:"fraction_of_unpaced"`
	LowestFailRate      float64 `json:"lowest_fail_rate"`
}

// RateSearch finds the highest paced rate that the fan-out delivers with
// zero drops over Window: one unpaced run gives the scale, then paced
// probes double the rate from Start until one fails (or halve it until one
// passes), then bisect between the highest pass and the lowest failure
// until they are within Tolerance or MaxProbes probes have run. A probe
// passes with no drops, gaps, reordering, reader failures or unfinished
// readers, writers at most MaxLate behind schedule and readers at most
// MaxDrain behind at the end.
func RateSearch(ctx context.Context, o RateSearchOptions) (RateSearchResult, error) {
	if o.Window <= 0 {
		o.Window = DefaultRateWindow
	}
	if o.Unpaced <= 0 {
		o.Unpaced = DefaultRateUnpaced
	}
	if o.MaxProbes <= 0 {
		o.MaxProbes = DefaultRateMaxProbes
	}
	if o.Tolerance <= 0 {
		o.Tolerance = DefaultRateTolerance
	}
	if o.MaxLate <= 0 {
		o.MaxLate = DefaultRateMaxLate
	}
	if o.MaxDrain <= 0 {
		o.MaxDrain = DefaultRateMaxDrain
	}
	fo, err := o.Fanout.withDefaults()
	res := RateSearchResult{Scenario: "rate-search", URL: fo.URL, Readers: fo.Readers, Writers: fo.Writers, Topics: fo.Topics, Size: fo.Size, WindowSec: o.Window.Seconds()}
	if err != nil {
		return res, err
	}
	run := func(n int, rate float64, d time.Duration) (RateProbe, error) {
		opts := o.Fanout
		opts.Rate, opts.Duration = rate, d
		runtime.GC()
		r, err := Fanout(ctx, opts)
		p := RateProbe{N: n, Rate: rate, Result: r}
		if err != nil {
			return p, fmt.Errorf("bench: probe %d (%s): %w", n, rateName(rate), err)
		}
		p.Pass, p.Reason = judgeProbe(&r, o.MaxLate, o.MaxDrain)
		if o.Progress != nil {
			o.Progress(p)
		}
		return p, nil
	}

	u, err := run(0, 0, o.Unpaced)
	res.Unpaced = u
	if err != nil {
		return res, err
	}
	fan := float64(fo.Readers * fo.Writers * fo.Topics) // deliveries per message/s of each writer
	res.UnpacedRate = u.Result.DeliveredPerSec / fan
	start := o.Start
	if start <= 0 {
		start = max(1, roundRate(res.UnpacedRate/8))
	}
	_, bad, err := searchRate(start, o.MaxProbes, o.Tolerance, func(n int, rate float64) (bool, error) {
		p, err := run(n, rate, o.Window)
		res.Probes = append(res.Probes, p)
		if err == nil && p.Pass && rate > res.BestRate {
			res.BestRate, res.BestDeliveredPerSec = rate, p.Result.DeliveredPerSec
		}
		return p.Pass, err
	})
	if err != nil {
		return res, err
	}
	res.LowestFailRate = bad
	if u.Result.DeliveredPerSec > 0 {
		res.Fraction = res.BestDeliveredPerSec / u.Result.DeliveredPerSec
	}
	return res, nil
}

// searchRate probes rates, doubling from start until a probe fails (or
// halving until one passes), then bisecting (geometric mean, three
// significant digits) between the highest pass and the lowest failure
// until the failure is within tol of the pass or maxProbes probes have run.
// It returns the highest passing and the lowest failing rate (0 for none).
func searchRate(start float64, maxProbes int, tol float64, probe func(n int, rate float64) (bool, error)) (good, bad float64, err error) {
	rate := start
	for n := 1; n <= maxProbes; n++ {
		pass, err := probe(n, rate)
		if err != nil {
			return good, bad, err
		}
		if pass {
			good = max(good, rate)
		} else if bad == 0 || rate < bad {
			bad = rate
		}
		switch {
		case bad == 0:
			rate = roundRate(2 * rate)
		case good == 0:
			if rate <= 1 {
				return good, bad, nil // nothing lower to try
			}
			rate = max(1, roundRate(rate/2))
		case bad <= good*(1+tol):
			return good, bad, nil
		default:
			rate = roundRate(math.Sqrt(good * bad))
			if rate <= good || rate >= bad {
				return good, bad, nil // the bracket cannot be split further
			}
		}
	}
	return good, bad, nil
}

// judgeProbe tells whether a paced run kept up, and if not why.
func judgeProbe(r *FanoutResult, maxLate, maxDrain time.Duration) (bool, string) {
	var why []string
	if r.Drops > 0 {
		why = append(why, fmt.Sprintf("%d drops", r.Drops))
	}
	if r.Gaps > 0 {
		why = append(why, fmt.Sprintf("%d gaps", r.Gaps))
	}
	if r.Reordered > 0 {
		why = append(why, fmt.Sprintf("%d reordered", r.Reordered))
	}
	if r.Incomplete > 0 || r.ReaderErrors > 0 {
		why = append(why, fmt.Sprintf("%d readers unfinished, %d failed", r.Incomplete, r.ReaderErrors))
	}
	if r.Rate > 0 && r.WriterMaxLateUS != nil && *r.WriterMaxLateUS > float64(maxLate.Microseconds()) {
		why = append(why, fmt.Sprintf("writer %.0f ms behind schedule", *r.WriterMaxLateUS/1e3))
	}
	if r.DrainSec > maxDrain.Seconds() {
		why = append(why, fmt.Sprintf("readers %.1f s behind at the end", r.DrainSec))
	}
	if r.Rate == 0 {
		return true, ""
	}
	return len(why) == 0, strings.Join(why, ", ")
}

// roundRate rounds a rate to three significant digits.
func roundRate(r float64) float64 {
	if r <= 0 {
		return 0
	}
	scale := math.Pow(10, math.Floor(math.Log10(r))-2)
	return math.Round(r/scale) * scale
}

func rateName(rate float64) string {
	if rate == 0 {
		return "unpaced"
	}
	return fmt.Sprintf("%g msg/s", rate)
}

// ProbeLine is a one-line summary of a probe, for progress output.
func (p *RateProbe) ProbeLine() string {
	r := &p.Result
	verdict := "pass"
	switch {
	case p.Rate == 0:
		verdict = "unpaced"
	case !p.Pass:
		verdict = "FAIL: " + p.Reason
	}
	late := ""
	if r.WriterMaxLateUS != nil {
		late = fmt.Sprintf(", writer late ≤ %s µs", us(*r.WriterMaxLateUS))
	}
	return fmt.Sprintf("probe %2d  %-14s  delivered %9.0f/s  drops %d  p99 %s µs  p99.9 %s µs%s  %s",
		p.N, rateName(p.Rate), r.DeliveredPerSec, r.Drops, us(r.LatencyUS.P99), us(r.LatencyUS.P999), late, verdict)
}

// WriteTable writes r as a human-readable table.
func (r *RateSearchResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	shape := (&FanoutResult{Readers: r.Readers, Writers: r.Writers, Topics: r.Topics}).shape()
	row("scenario", "rate-search: %s, %d B, zero drops over %.0f s per probe", shape, r.Size, r.WindowSec)
	row("relay", "%s", r.URL)
	row("unpaced", "%.0f delivered/s (%.0f s): %.0f msg/s per writer and reader", r.Unpaced.Result.DeliveredPerSec, r.Unpaced.Result.DurationSec, r.UnpacedRate)
	for i := range r.Probes {
		row("", "%s", r.Probes[i].ProbeLine())
	}
	if r.BestRate > 0 {
		row("highest zero-drop rate", "%g msg/s per writer: %.0f delivered/s, %.2f of unpaced", r.BestRate, r.BestDeliveredPerSec, r.Fraction)
	} else {
		row("highest zero-drop rate", "none found")
	}
	if r.LowestFailRate > 0 {
		row("lowest failing rate", "%g msg/s", r.LowestFailRate)
	}
	return tw.Flush()
}
