package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Defaults of SoakOptions.
const (
	DefaultSoakDuration     = 10 * time.Minute
	DefaultSoakSample       = 30 * time.Second
	DefaultSoakReaders      = 20
	DefaultSoakRate         = 100
	DefaultSoakChurnRate    = 20
	DefaultSoakChurnHold    = 500 * time.Millisecond
	DefaultSoakExchangeRate = 100
	DefaultSoakDenyEvery    = 2 * time.Second
	// DefaultSoakThreshold: a series fails when its linear trend predicts
	// more growth per 10 minutes than this fraction of its mean …
	DefaultSoakThreshold = 0.10
	// … and more than these absolute floors, below which sampling noise
	// (a GC cycle, the connections of the churn in flight) dominates.
	DefaultSoakRSSFloor       = 8 << 20
	DefaultSoakGoroutineFloor = 20
	// soakParallel bounds the churn and exchange operations in flight
	// (each); a tick that finds no room is counted as skipped.
	soakParallel = 64
	// soakBookings is how many booking ids the revocations cycle through,
	// so that the relay's deny and allow lists stay bounded.
	soakBookings = 8
	// soakTrendSpan is the span the growth limit refers to.
	soakTrendSpan = 10 * time.Minute
)

// SoakOptions configure Soak.
type SoakOptions struct {
	// URL is the relay's base URL (loopback only); Secret signs the
	// connection, admin (revocations) and stats (/metrics) tokens. Both
	// required.
	URL    string
	Secret []byte
	// ServerPID, if positive, is sampled for RSS; without it only
	// goroutines are checked.
	ServerPID int
	// Duration is how long the load runs (default 10 min); Sample is the
	// sampling period (default 30 s).
	Duration, Sample time.Duration
	// The fan-out: Readers readers (default 20) of one writer at Rate
	// messages/s (default 100) of Size bytes (default 1024), on one topic.
	Readers int
	Rate    float64
	Size    int
	// ChurnRate connections per second (default 20) join the fan-out topic,
	// read for ChurnHold (default 500 ms) and close.
	ChurnRate float64
	ChurnHold time.Duration
	// ExchangeRate access + code exchange cycles per second (default 100),
	// each closed at once, on other topics.
	ExchangeRate float64
	// Every DenyEvery (default 2 s) a connection with a booking id is
	// denied with POST /bids/deny (it must close with 4003, and new access
	// must be refused), then allowed again with POST /bids/allow.
	DenyEvery time.Duration
	// Threshold, RSSFloor and GoroutineFloor set when growth fails (see
	// the defaults).
	Threshold      float64
	RSSFloor       float64
	GoroutineFloor float64
	// Progress, if set, is called with each sample as it is taken.
	Progress func(SoakSample)
}

// SoakSample is one sample of the server.
type SoakSample struct {
	TSec       float64 `json:"t_sec"`
	RSSBytes   int64   `json:"rss_bytes,omitempty"`  // 0: not read
	Goroutines int     `json:"goroutines,omitempty"` // 0: not read
	// Operations completed so far.
	Churned   uint64 `json:"churned"`
	Exchanges uint64 `json:"exchanges"`
	Denies    uint64 `json:"denies"`
	Errors    uint64 `json:"errors"`
}

// Trend is the least-squares line through a series, first sample left out.
type Trend struct {
	Samples     int     `json:"samples"`
	Mean        float64 `json:"mean"`
	SlopePerSec float64 `json:"slope_per_sec"`
	// GrowthPer10Min is the slope over 10 minutes; Limit is the most
	// allowed: max(Threshold × Mean, floor).
	GrowthPer10Min float64 `json:"growth_per_10min"`
	Limit          float64 `json:"limit"`
	Pass           bool    `json:"pass"`
	Skipped        string  `json:"skipped,omitempty"` // why there is no verdict
}

// SoakResult is the outcome of Soak.
type SoakResult struct {
	Scenario    string       `json:"scenario"` // "soak"
	URL         string       `json:"url"`
	DurationSec float64      `json:"duration_sec"`
	SampleSec   float64      `json:"sample_sec"`
	Samples     []SoakSample `json:"samples"`
	RSS         Trend        `json:"rss"`
	Goroutines  Trend        `json:"goroutines"`

	Fanout      *FanoutResult `json:"fanout,omitempty"`
	FanoutError string        `json:"fanout_error,omitempty"`
	Churned     uint64        `json:"churned"`
	Exchanges   uint64        `json:"exchanges"`
	Denies      uint64        `json:"denies"` // deny → 4003 → refused → allow → accepted cycles
	Skipped     uint64        `json:"skipped"`
	Errors      uint64        `json:"errors"`
	FirstErrors []string      `json:"first_errors,omitempty"`

	Failures []string `json:"failures,omitempty"`
	Pass     bool     `json:"pass"`
}

// soakState counts the operations of the load goroutines.
type soakState struct {
	churned, exchanges, denies, skipped, errs atomic.Uint64
	mu                                        sync.Mutex
	firstErrs                                 []string
}

func (s *soakState) fail(what string, err error) {
	s.errs.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.firstErrs) < 5 {
		s.firstErrs = append(s.firstErrs, what+": "+err.Error())
	}
}

// Soak runs a mixed load for Duration: a paced fan-out, connection churn
// on the fan-out topic, access + code exchange cycles and revocations. It
// samples the server's RSS (from /proc) and goroutines (from /metrics)
// every Sample and fits a linear trend to each, leaving out the first
// sample as warm-up; the soak fails if a trend predicts more growth per 10
// minutes than max(Threshold × mean, floor), or if any operation failed.
// It returns an error only when it could not run.
func Soak(ctx context.Context, o SoakOptions) (SoakResult, error) {
	if o.Duration <= 0 {
		o.Duration = DefaultSoakDuration
	}
	if o.Sample <= 0 {
		o.Sample = DefaultSoakSample
	}
	if o.Readers <= 0 {
		o.Readers = DefaultSoakReaders
	}
	if o.Rate <= 0 {
		o.Rate = DefaultSoakRate
	}
	if o.Size <= 0 {
		o.Size = DefaultSize
	}
	if o.ChurnRate <= 0 {
		o.ChurnRate = DefaultSoakChurnRate
	}
	if o.ChurnHold <= 0 {
		o.ChurnHold = DefaultSoakChurnHold
	}
	if o.ExchangeRate <= 0 {
		o.ExchangeRate = DefaultSoakExchangeRate
	}
	if o.DenyEvery <= 0 {
		o.DenyEvery = DefaultSoakDenyEvery
	}
	if o.Threshold <= 0 {
		o.Threshold = DefaultSoakThreshold
	}
	if o.RSSFloor <= 0 {
		o.RSSFloor = DefaultSoakRSSFloor
	}
	if o.GoroutineFloor <= 0 {
		o.GoroutineFloor = DefaultSoakGoroutineFloor
	}
	res := SoakResult{Scenario: "soak", URL: o.URL, DurationSec: o.Duration.Seconds(), SampleSec: o.Sample.Seconds()}
	if err := CheckLoopbackURL(o.URL); err != nil {
		return res, err
	}
	if len(o.Secret) == 0 {
		return res, errors.New("bench: the relay's secret is needed to mint connection, admin and stats tokens")
	}
	ttl := o.Duration + time.Hour
	mint := func(topic, booking string, scopes ...string) (string, error) {
		return mintToken(o.Secret, o.URL, ttl, func(c *auth.Claims) {
			c.Topic, c.BookingID, c.Scopes = topic, booking, scopes
			if topic != "" {
				c.Prefix = client.DefaultPrefix
			}
		})
	}
	const fanTopic = "bench/soak/fanout"
	admin, err := mint("", "", auth.ScopeAdmin)
	if err != nil {
		return res, err
	}
	stats, err := mint("", "", auth.ScopeStats)
	if err != nil {
		return res, err
	}
	readTok, err := mint("bench/soak/*", "", auth.ScopeRead)
	if err != nil {
		return res, err
	}
	denyToks := make([]string, soakBookings)
	for i := range denyToks {
		if denyToks[i], err = mint("bench/soak/deny/*", soakBooking(i), auth.ScopeRead); err != nil {
			return res, err
		}
	}
	hc := &http.Client{Timeout: accessOpTimeout}
	defer hc.CloseIdleConnections()
	if _, err := metricValue(ctx, hc, o.URL, stats, "go_goroutines"); err != nil {
		return res, fmt.Errorf("bench: soak: read /metrics: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(o.Duration)
	stop := make(chan struct{}) // closed at the deadline: the loads end
	var st soakState
	var wg sync.WaitGroup
	ex := newExchanger(o.URL, DefaultAccessSources, soakParallel, false)
	defer ex.close()

	// The fan-out runs for Duration after connecting.
	var fan FanoutResult
	var fanErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		fan, fanErr = Fanout(ctx, FanoutOptions{
			URL: o.URL, Secret: o.Secret, Topic: fanTopic, Readers: o.Readers, Size: o.Size,
			Rate: o.Rate, Duration: o.Duration, Warmup: -1,
		})
	}()

	// Churn: join the fan-out topic, read for ChurnHold, close.
	paced(&wg, stop, o.ChurnRate, &st, func() {
		cctx, cancel := context.WithTimeout(ctx, accessOpTimeout)
		defer cancel()
		c, _, _, err := ex.dial(cctx, fanTopic, readTok)
		if err != nil {
			st.fail("churn", err)
			return
		}
		read := make(chan error, 1)
		go func() {
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					read <- err
					return
				}
			}
		}()
		hold := time.NewTimer(o.ChurnHold)
		select {
		case <-hold.C:
		case err := <-read:
			hold.Stop()
			_ = c.CloseNow()
			st.fail("churn: read", err)
			return
		}
		err = c.Close()
		<-read
		if err != nil {
			st.fail("churn: close", err)
			return
		}
		st.churned.Add(1)
	})

	// Access + code exchange, closed at once, on 16 other topics.
	var exN atomic.Uint64
	paced(&wg, stop, o.ExchangeRate, &st, func() {
		cctx, cancel := context.WithTimeout(ctx, accessOpTimeout)
		defer cancel()
		c, _, _, err := ex.dial(cctx, fmt.Sprintf("bench/soak/x%d", exN.Add(1)%16), readTok)
		if err == nil {
			err = c.Close()
		}
		if err != nil {
			st.fail("exchange", err)
			return
		}
		st.exchanges.Add(1)
	})

	// Revocations, one cycle at a time.
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(o.DenyEvery)
		defer t.Stop()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if err := denyCycle(ctx, ex, hc, o.URL, admin, k%soakBookings, denyToks[k%soakBookings]); err != nil {
				st.fail("revocation", err)
				continue
			}
			st.denies.Add(1)
		}
	}()

	// Sample until the deadline.
	sample := func() {
		s := SoakSample{TSec: time.Since(start).Seconds(), Churned: st.churned.Load(), Exchanges: st.exchanges.Load(), Denies: st.denies.Load(), Errors: st.errs.Load()}
		if o.ServerPID > 0 {
			if rss, err := ProcRSS(o.ServerPID); err == nil {
				s.RSSBytes = rss
			} else {
				st.fail("sample RSS", err)
			}
		}
		if g, err := metricValue(ctx, hc, o.URL, stats, "go_goroutines"); err == nil {
			s.Goroutines = g
		} else {
			st.fail("sample goroutines", err)
		}
		res.Samples = append(res.Samples, s)
		if o.Progress != nil {
			o.Progress(s)
		}
	}
	sample()
	timer := time.NewTimer(o.Sample)
	for next := start.Add(o.Sample); ; next = next.Add(o.Sample) {
		if next.After(deadline) {
			next = deadline
		}
		timer.Reset(time.Until(next))
		select {
		case <-timer.C:
		case <-ctx.Done():
			close(stop)
			cancel()
			wg.Wait()
			return res, ctx.Err()
		}
		sample()
		if !next.Before(deadline) {
			break
		}
	}
	close(stop)
	wg.Wait()

	res.Churned, res.Exchanges, res.Denies = st.churned.Load(), st.exchanges.Load(), st.denies.Load()
	res.Skipped, res.Errors, res.FirstErrors = st.skipped.Load(), st.errs.Load(), st.firstErrs
	if fanErr != nil {
		res.FanoutError = fanErr.Error()
	} else {
		res.Fanout = &fan
	}

	var ts, rss, gs []float64
	var tg []float64
	for _, s := range res.Samples {
		if s.RSSBytes > 0 {
			ts, rss = append(ts, s.TSec), append(rss, float64(s.RSSBytes))
		}
		if s.Goroutines > 0 {
			tg, gs = append(tg, s.TSec), append(gs, float64(s.Goroutines))
		}
	}
	res.RSS = FitTrend(ts, rss, o.Threshold, o.RSSFloor)
	if o.ServerPID <= 0 {
		res.RSS.Skipped = "no server process id"
	}
	res.Goroutines = FitTrend(tg, gs, o.Threshold, o.GoroutineFloor)
	if !res.RSS.Pass && res.RSS.Skipped == "" {
		res.Failures = append(res.Failures, fmt.Sprintf("server RSS grows: %+.1f MiB per 10 min (mean %.1f MiB; limit %.1f MiB)",
			res.RSS.GrowthPer10Min/(1<<20), res.RSS.Mean/(1<<20), res.RSS.Limit/(1<<20)))
	}
	if !res.Goroutines.Pass && res.Goroutines.Skipped == "" {
		res.Failures = append(res.Failures, fmt.Sprintf("server goroutines grow: %+.0f per 10 min (mean %.0f; limit %.0f)",
			res.Goroutines.GrowthPer10Min, res.Goroutines.Mean, res.Goroutines.Limit))
	}
	switch {
	case fanErr != nil:
		res.Failures = append(res.Failures, "fan-out: "+fanErr.Error())
	case fan.ReaderErrors > 0 || fan.Reordered > 0 || fan.Incomplete > 0:
		res.Failures = append(res.Failures, fmt.Sprintf("fan-out: %d readers failed, %d unfinished, %d reordered", fan.ReaderErrors, fan.Incomplete, fan.Reordered))
	}
	if res.Errors > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("%d operations failed", res.Errors))
	}
	res.Pass = len(res.Failures) == 0
	return res, nil
}

func soakBooking(i int) string { return fmt.Sprintf("bench-soak-%d", i) }

// paced runs op rate times per second, each in its own goroutine, at most
// soakParallel at once, until stop is closed.
func paced(wg *sync.WaitGroup, stop <-chan struct{}, rate float64, st *soakState, op func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		sem := make(chan struct{}, soakParallel)
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		for {
			select {
			case <-stop:
				for range soakParallel { // wait for the operations in flight
					sem <- struct{}{}
				}
				return
			case <-t.C:
			}
			select {
			case sem <- struct{}{}:
				go func() {
					defer func() { <-sem }()
					op()
				}()
			default:
				st.skipped.Add(1)
			}
		}
	}()
}

// denyCycle opens a connection with booking number k, denies the booking,
// checks that the connection closes with 4003 and that access is refused,
// allows the booking again and checks that access works.
func denyCycle(ctx context.Context, ex *exchanger, hc *http.Client, baseURL, admin string, k int, tok string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*accessOpTimeout)
	defer cancel()
	topic := fmt.Sprintf("bench/soak/deny/%d", k)
	c, _, _, err := ex.dial(ctx, topic, tok)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.CloseNow()
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				closed <- err
				return
			}
		}
	}()
	exp := time.Now().Add(10 * time.Minute).Unix()
	if _, err := httpDo(ctx, hc, http.MethodPost, fmt.Sprintf("%s/bids/deny?bid=%s&exp=%d", baseURL, soakBooking(k), exp), admin, http.StatusNoContent); err != nil {
		return err
	}
	select {
	case err := <-closed:
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != wire.CloseDenied {
			return fmt.Errorf("denied connection ended with %v, want close code 4003", err)
		}
	case <-ctx.Done():
		_ = c.CloseNow()
		<-closed
		return fmt.Errorf("denied connection not closed: %w", ctx.Err())
	}
	_, err = client.Access(ctx, baseURL, topic, tok, ex.post)
	var ae *client.AccessError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != wire.ErrorBookingDenied {
		return fmt.Errorf("access with a denied booking: got %v, want 403 %s", err, wire.ErrorBookingDenied)
	}
	if _, err := httpDo(ctx, hc, http.MethodPost, fmt.Sprintf("%s/bids/allow?bid=%s&exp=%d", baseURL, soakBooking(k), exp), admin, http.StatusNoContent); err != nil {
		return err
	}
	c2, _, _, err := ex.dial(ctx, topic, tok)
	if err != nil {
		return fmt.Errorf("connect after allow: %w", err)
	}
	return c2.Close()
}

// FitTrend fits a least-squares line to the series (t in seconds), leaving
// out the first sample as warm-up, and judges its growth over 10 minutes
// against max(threshold × mean, floor). With fewer than three samples left
// there is no verdict (Skipped says so, Pass is true).
func FitTrend(t, v []float64, threshold, floor float64) Trend {
	if len(t) > 0 {
		t, v = t[1:], v[1:]
	}
	tr := Trend{Samples: len(t), Pass: true}
	if len(t) < 3 {
		tr.Skipped = fmt.Sprintf("%d samples after the first; need 3", len(t))
		return tr
	}
	n := float64(len(t))
	var mt, mv float64
	for i := range t {
		mt += t[i]
		mv += v[i]
	}
	mt, mv = mt/n, mv/n
	var sxy, sxx float64
	for i := range t {
		sxy += (t[i] - mt) * (v[i] - mv)
		sxx += (t[i] - mt) * (t[i] - mt)
	}
	tr.Mean = mv
	if sxx > 0 {
		tr.SlopePerSec = sxy / sxx
	}
	tr.GrowthPer10Min = tr.SlopePerSec * soakTrendSpan.Seconds()
	tr.Limit = max(threshold*mv, floor)
	tr.Pass = tr.GrowthPer10Min <= tr.Limit
	return tr
}

// WriteSampleLine writes one sample as a line of the progress output.
func WriteSampleLine(w io.Writer, s SoakSample) {
	rss := "-"
	if s.RSSBytes > 0 {
		rss = fmt.Sprintf("%.1f MiB", float64(s.RSSBytes)/(1<<20))
	}
	fmt.Fprintf(w, "sample t=%5.0fs  rss %-10s  goroutines %-6d  churned %d  exchanges %d  revocations %d  errors %d\n",
		s.TSec, rss, s.Goroutines, s.Churned, s.Exchanges, s.Denies, s.Errors)
}

// WriteTable writes r as a human-readable table (the samples are printed
// as they are taken, see WriteSampleLine).
func (r *SoakResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("scenario", "soak: fan-out, churn, access + code exchange, revocations for %.0f s, sampled every %.0f s", r.DurationSec, r.SampleSec)
	row("relay", "%s", r.URL)
	if f := r.Fanout; f != nil {
		row("fan-out", "%d readers at %g msg/s: delivered %d, drops %d, p99 %s µs, p99.9 %s µs, max %s µs",
			f.Readers, f.Rate, f.Delivered, f.Drops, us(f.LatencyUS.P99), us(f.LatencyUS.P999), us(f.LatencyUS.Max))
	} else {
		row("fan-out", "failed: %s", r.FanoutError)
	}
	row("operations", "churned %d, exchanges %d, revocation cycles %d, skipped %d, errors %d", r.Churned, r.Exchanges, r.Denies, r.Skipped, r.Errors)
	for _, e := range r.FirstErrors {
		row("error", "%s", e)
	}
	trend := func(name string, t Trend, unit float64, u string) {
		if t.Skipped != "" {
			row(name, "no verdict: %s", t.Skipped)
			return
		}
		verdict := "ok"
		if !t.Pass {
			verdict = "GROWS"
		}
		row(name, "mean %.1f%s, trend %+.2f%s per 10 min (limit %.1f%s, %d samples): %s",
			t.Mean/unit, u, t.GrowthPer10Min/unit, u, t.Limit/unit, u, t.Samples, verdict)
	}
	trend("server RSS", r.RSS, 1<<20, " MiB")
	trend("goroutines", r.Goroutines, 1, "")
	if r.Pass {
		row("result", "PASS")
	} else {
		for _, f := range r.Failures {
			row("result", "FAIL: %s", f)
		}
	}
	return tw.Flush()
}
