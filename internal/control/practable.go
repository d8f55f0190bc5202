package control

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// PractableClientReport is one connection in practable's stats report: the
// schema of practable/relay's crossbar.ClientReport, field for field, in
// its order, which practable/status decodes (its relay/pkg/status.Report).
// Times are UTC with whole seconds ("2006-01-02T15:04:05Z"): practable keeps
// Unix seconds. practable's report has no "stats" member (status reads it
// as zero), and neither has this one.
type PractableClientReport struct {
	CanRead     bool     `json:"canRead"`
	CanWrite    bool     `json:"canWrite"`
	ConnectedAt string   `json:"connected"`
	ExpiresAt   string   `json:"expiresAt"`
	RemoteAddr  string   `json:"remoteAddr"`
	Scopes      []string `json:"scopes"`
	Topic       string   `json:"topic"`
	UserAgent   string   `json:"userAgent"`
}

// PractableReport returns practable's report of rs's session connections,
// oldest first. practable's relay has sessions only, so shell and agent
// connections are left out. A connection with no expiry shows the Unix
// epoch, as practable's own stats client does; one of practable's stats
// feed shows its topic as practable's clients named it ("stats").
func PractableReport(rs *relay.Server) []PractableClientReport {
	conns := rs.Connections()
	out := make([]PractableClientReport, 0, len(conns))
	for _, cs := range conns {
		if cs.Info.Prefix != wire.PrefixSession {
			continue
		}
		name := cs.Info.Topic
		if name == access.PractableStatsRelayTopic {
			name = access.PractableStatsTopic
		}
		scopes := cs.Info.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		out = append(out, PractableClientReport{
			CanRead: cs.Info.CanRead, CanWrite: cs.Info.CanWrite,
			ConnectedAt: practableTime(cs.ConnectedAt), ExpiresAt: practableTime(cs.Info.ExpiresAt),
			RemoteAddr: cs.Info.RemoteAddr, Scopes: scopes, Topic: name, UserAgent: cs.Info.UserAgent,
		})
	}
	return out
}

// practableTime formats t as practable does: time.Unix(seconds, 0).UTC()
// as text; the zero time is the Unix epoch.
func practableTime(t time.Time) string {
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	return t.Truncate(time.Second).UTC().Format(time.RFC3339)
}

// PractableUpdateGap is the least time between two reports of practable's
// feed asked for by {"cmd":"update"}: practable's stats reporter answers at
// most once a second.
const PractableUpdateGap = time.Second

// PractableStatsPublisher publishes practable's report
// (PractableReport) on access.PractableStatsRelayTopic every interval, and
// at once when a reader asks ({"cmd":"update"}, Update) but at most once per
// PractableUpdateGap, while the feed has readers. Each report is one JSON
// array, or several when it is larger than the relay's message limit.
type PractableStatsPublisher struct {
	relay    *relay.Server // set by Start
	every    time.Duration
	update   chan struct{} // capacity 1
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// NewPractableStatsPublisher returns a publisher; every 0 means
// DefaultStatsEvery (practable's default too).
func NewPractableStatsPublisher(every time.Duration) *PractableStatsPublisher {
	if every <= 0 {
		every = DefaultStatsEvery
	}
	return &PractableStatsPublisher{every: every, update: make(chan struct{}, 1), done: make(chan struct{})}
}

// Update asks for a report at once. It never blocks.
func (p *PractableStatsPublisher) Update() {
	select {
	case p.update <- struct{}{}:
	default:
	}
}

// Start publishes rs's report until Stop. Call it once.
func (p *PractableStatsPublisher) Start(rs *relay.Server) {
	p.relay = rs
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.run()
	}()
}

// Stop ends the publisher and waits for it.
func (p *PractableStatsPublisher) Stop() {
	p.stopOnce.Do(func() { close(p.done) })
	p.wg.Wait()
}

func (p *PractableStatsPublisher) run() {
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	// held delays an update asked for within PractableUpdateGap of the
	// last report until the gap has passed.
	held := time.NewTimer(time.Hour)
	held.Stop()
	var last time.Time
	for {
		select {
		case <-p.done:
			return
		case <-p.update:
			if wait := PractableUpdateGap - time.Since(last); wait > 0 {
				held.Reset(wait)
				continue
			}
		case <-held.C:
		case <-tick.C:
		}
		last = time.Now()
		p.publish()
	}
}

func (p *PractableStatsPublisher) publish() {
	if p.relay.Readers(access.PractableStatsRelayTopic) == 0 {
		return
	}
	for _, b := range reportMessages(PractableReport(p.relay), p.relay.Config().MaxMessageBytes) {
		p.relay.Publish(access.PractableStatsRelayTopic, relay.Message{Type: relay.Text, Data: b})
	}
}

// descCoalesced describes the relay's merges for --coalesce readers.
var descCoalesced = prometheus.NewDesc("switchboard_coalesced_total",
	"Messages written to readers of --coalesce topics that merged several queued messages (kind frames), and the messages merged into them (kind messages).",
	[]string{"kind"}, nil)

// coalesceCollector exports the relay's coalescing counters
// (relay.Stats.CoalescedFrames, CoalescedMessages).
type coalesceCollector struct{ rs *relay.Server }

func (c coalesceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCoalesced }

func (c coalesceCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.rs.Stats()
	ch <- prometheus.MustNewConstMetric(descCoalesced, prometheus.CounterValue, float64(st.CoalescedFrames), "frames")
	ch <- prometheus.MustNewConstMetric(descCoalesced, prometheus.CounterValue, float64(st.CoalescedMessages), "messages")
}

// maxPractableErrorBytes bounds an error body practableErrors rewrites; a
// larger one (none of ours is) passes unchanged.
const maxPractableErrorBytes = 64 << 10

// practableErrors answers the errors of practable's routes (/bids/…) in a
// shape that practable's clients and ours both read: practable's Error model
// (api/access.yml: top-level "code" and "message", which practable/book's
// go-swagger client decodes for 400 and 401) beside our "error" member,
// which apierr writes and pkg/client and the dashboard read:
//
//	{"code":"invalid_exp","message":"exp is in the past","error":{"code":"invalid_exp","message":"exp is in the past"}}
//
// Statuses are ours (docs/migrating-from-practable.md lists where they
// differ from practable's); successful answers pass unchanged.
func practableErrors(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pw := &practableErrorWriter{ResponseWriter: w}
		next(pw, r)
		pw.finish()
	}
}

// practableErrorWriter holds back an error response's body until the
// handler returns, then writes it in practableErrors's shape.
type practableErrorWriter struct {
	http.ResponseWriter
	status int // the error status held back; 0 while none
	body   bytes.Buffer
	raw    bool // the body outgrew maxPractableErrorBytes: passed on as it is
}

func (p *practableErrorWriter) WriteHeader(status int) {
	if status >= 400 && p.status == 0 {
		p.status = status
		return
	}
	p.ResponseWriter.WriteHeader(status)
}

func (p *practableErrorWriter) Write(b []byte) (int, error) {
	if p.status == 0 || p.raw {
		return p.ResponseWriter.Write(b)
	}
	if p.body.Len()+len(b) > maxPractableErrorBytes {
		p.raw = true
		p.ResponseWriter.WriteHeader(p.status)
		if _, err := p.ResponseWriter.Write(p.body.Bytes()); err != nil {
			return 0, err
		}
		return p.ResponseWriter.Write(b)
	}
	return p.body.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (p *practableErrorWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

func (p *practableErrorWriter) finish() {
	if p.status == 0 || p.raw {
		return
	}
	var ours struct {
		Error *apierr.Error `json:"error"`
	}
	if json.Unmarshal(p.body.Bytes(), &ours) != nil || ours.Error == nil {
		p.ResponseWriter.WriteHeader(p.status)
		p.ResponseWriter.Write(p.body.Bytes())
		return
	}
	p.ResponseWriter.WriteHeader(p.status)
	json.NewEncoder(p.ResponseWriter).Encode(struct {
		Code    string        `json:"code"`
		Message string        `json:"message"`
		Error   *apierr.Error `json:"error"`
	}{ours.Error.Code, ours.Error.Message, ours.Error})
}
