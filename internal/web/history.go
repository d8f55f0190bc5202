package web

// Traffic history for the Overview's charts: a sampler reads the relay's
// counters every historyInterval into a ring covering historyWindow, and
// GET /ui/api/history serves it as rates. The page then extends the charts
// itself from the stats topic, so it never polls.

import (
	"context"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/relay"
)

const (
	historyInterval = 10 * time.Second
	historyWindow   = 15 * time.Minute
	// historySamples holds a window of intervals: one more sample than
	// intervals, since a rate needs two.
	historySamples = int(historyWindow/historyInterval) + 1
)

// uiState is the pages' state in a Handler (its field ui). The zero value
// is ready: the history is created on first use.
type uiState struct {
	mu     sync.Mutex
	hist   *history           // guarded by mu
	cancel context.CancelFunc // guarded by mu; stops the sampler Start started
	done   chan struct{}      // guarded by mu; closed when the sampler has ended
}

// historyOf returns h's history, creating it (nil without a relay).
func (h *Handler) historyOf() *history {
	st := &h.ui
	st.mu.Lock()
	defer st.mu.Unlock()
	return h.historyLocked()
}

func (h *Handler) historyLocked() *history {
	if h.ui.hist == nil && h.cfg.Relay != nil {
		h.ui.hist = newHistory(h.cfg.Relay, h.cfg.Now)
	}
	return h.ui.hist
}

// Start starts the traffic sampler behind the Overview's charts: a sample
// now, then every 10 s, until ctx ends or Stop. Without Start the charts
// show only what is sampled when a page asks. Calling it again does
// nothing.
func (h *Handler) Start(ctx context.Context) {
	st := &h.ui
	st.mu.Lock()
	defer st.mu.Unlock()
	hist := h.historyLocked()
	if st.cancel != nil || hist == nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	st.cancel, st.done = cancel, done
	go func() {
		defer close(done)
		hist.run(ctx, historyInterval)
	}()
}

// Stop ends the sampler Start started and waits for it.
func (h *Handler) Stop() {
	st := &h.ui
	st.mu.Lock()
	cancel, done := st.cancel, st.done
	st.cancel, st.done = nil, nil
	st.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// trafficSource is what the sampler reads (a *relay.Server).
type trafficSource interface {
	Stats() relay.Stats
	Connections() []relay.ConnStatus
}

// trafficSample is the relay's counters at one time. Counters are totals
// since the server started.
type trafficSample struct {
	Time                                       time.Time
	Connections, Topics                        int
	Accepted                                   uint64
	ByPrefix                                   map[string]int
	MessagesIn, MessagesOut, BytesIn, BytesOut uint64
	Drops                                      map[string]uint64
}

// history is a ring of samples.
type history struct {
	src trafficSource
	now func() time.Time

	mu      sync.Mutex
	samples []trafficSample // guarded by mu; oldest first, at most historySamples
}

func newHistory(src trafficSource, now func() time.Time) *history {
	return &history{src: src, now: now}
}

func (hi *history) run(ctx context.Context, every time.Duration) {
	hi.sample()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hi.sample()
		}
	}
}

// read takes a sample without storing it.
func (hi *history) read() trafficSample {
	st := hi.src.Stats()
	s := trafficSample{
		Time: hi.now().UTC(), Connections: st.Connections, Topics: st.Topics, Accepted: st.Accepted,
		MessagesIn: st.MessagesIn, MessagesOut: st.MessagesOut, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
		Drops: maps.Clone(st.Drops), ByPrefix: map[string]int{},
	}
	if s.Drops == nil {
		s.Drops = map[string]uint64{}
	}
	for _, c := range hi.src.Connections() {
		s.ByPrefix[c.Info.Prefix]++
	}
	return s
}

// sample stores a sample, dropping those older than the window.
func (hi *history) sample() {
	s := hi.read()
	hi.mu.Lock()
	defer hi.mu.Unlock()
	hi.samples = append(hi.samples, s)
	if n := len(hi.samples) - historySamples; n > 0 {
		hi.samples = append(hi.samples[:0], hi.samples[n:]...)
	}
}

// historyJSON is the answer of /ui/api/history.
type historyJSON struct {
	IntervalSeconds int            `json:"interval_seconds"`
	WindowSeconds   int            `json:"window_seconds"`
	Now             time.Time      `json:"now"`
	Points          []historyPoint `json:"points"`
	Totals          historyTotals  `json:"totals"`
}

// historyPoint is the traffic of the interval that ends at Time.
type historyPoint struct {
	Time            time.Time         `json:"time"`
	Seconds         float64           `json:"seconds"` // length of the interval
	Connections     int               `json:"connections"`
	Topics          int               `json:"topics"`
	ByPrefix        map[string]int    `json:"by_prefix"`
	MessagesInPerS  float64           `json:"messages_in_per_s"`
	MessagesOutPerS float64           `json:"messages_out_per_s"`
	BytesInPerS     float64           `json:"bytes_in_per_s"`
	BytesOutPerS    float64           `json:"bytes_out_per_s"`
	Drops           map[string]uint64 `json:"drops"` // in the interval, by reason
}

// historyTotals are the counters since the server started.
type historyTotals struct {
	Connections int               `json:"connections"`
	Topics      int               `json:"topics"`
	Accepted    uint64            `json:"accepted"`
	MessagesIn  uint64            `json:"messages_in"`
	MessagesOut uint64            `json:"messages_out"`
	BytesIn     uint64            `json:"bytes_in"`
	BytesOut    uint64            `json:"bytes_out"`
	Drops       map[string]uint64 `json:"drops"`
}

// minPointInterval: a sample taken for the request closes the last
// interval only when it is at least this long (shorter rates are noise).
const minPointInterval = time.Second

// report returns the stored samples as rates, with a fresh sample as the
// end of the last interval.
func (hi *history) report() historyJSON {
	cur := hi.read()
	hi.mu.Lock()
	samples := append([]trafficSample(nil), hi.samples...)
	hi.mu.Unlock()
	if n := len(samples); n == 0 || cur.Time.Sub(samples[n-1].Time) >= minPointInterval {
		samples = append(samples, cur)
	}
	out := historyJSON{
		IntervalSeconds: int(historyInterval / time.Second), WindowSeconds: int(historyWindow / time.Second),
		Now: cur.Time, Points: []historyPoint{},
		Totals: historyTotals{Connections: cur.Connections, Topics: cur.Topics, Accepted: cur.Accepted,
			MessagesIn: cur.MessagesIn, MessagesOut: cur.MessagesOut, BytesIn: cur.BytesIn, BytesOut: cur.BytesOut, Drops: cur.Drops},
	}
	start := cur.Time.Add(-historyWindow)
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		if a.Time.Before(start) {
			continue
		}
		secs := b.Time.Sub(a.Time).Seconds()
		if secs <= 0 {
			continue
		}
		rate := func(x, y uint64) float64 { return float64(delta(x, y)) / secs }
		p := historyPoint{Time: b.Time, Seconds: secs, Connections: b.Connections, Topics: b.Topics, ByPrefix: b.ByPrefix,
			MessagesInPerS: rate(a.MessagesIn, b.MessagesIn), MessagesOutPerS: rate(a.MessagesOut, b.MessagesOut),
			BytesInPerS: rate(a.BytesIn, b.BytesIn), BytesOutPerS: rate(a.BytesOut, b.BytesOut),
			Drops: map[string]uint64{}}
		for k, v := range b.Drops {
			p.Drops[k] = delta(a.Drops[k], v)
		}
		out.Points = append(out.Points, p)
	}
	return out
}

// delta is y-x for counters that only grow (0 if one went back).
func delta(x, y uint64) uint64 {
	if y < x {
		return 0
	}
	return y - x
}

// serveHistory serves GET /ui/api/history.
func (h *Handler) serveHistory(w http.ResponseWriter, r *http.Request) {
	hist := h.historyOf()
	if hist == nil {
		apierr.WriteJSON(w, http.StatusOK, historyJSON{
			IntervalSeconds: int(historyInterval / time.Second), WindowSeconds: int(historyWindow / time.Second),
			Now: h.cfg.Now().UTC(), Points: []historyPoint{}, Totals: historyTotals{Drops: map[string]uint64{}},
		})
		return
	}
	apierr.WriteJSON(w, http.StatusOK, hist.report())
}
