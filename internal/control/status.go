package control

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
)

// StatsTopic is the system topic the status report is published on.
const StatsTopic = "stats"

// ConnReport describes one connection in the status report. The first
// fields are practable/relay's.
type ConnReport struct {
	Topic       string    `json:"topic"`
	CanRead     bool      `json:"can_read"`
	CanWrite    bool      `json:"can_write"`
	ConnectedAt time.Time `json:"connected_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	RemoteAddr  string    `json:"remote_addr"`
	UserAgent   string    `json:"user_agent"`
	Scopes      []string  `json:"scopes"`

	ID           string     `json:"id"`
	Prefix       string     `json:"prefix"`
	BookingID    string     `json:"booking_id"`
	Sub          string     `json:"sub"`
	MessagesIn   uint64     `json:"messages_in"`
	BytesIn      uint64     `json:"bytes_in"`
	MessagesOut  uint64     `json:"messages_out"`
	BytesOut     uint64     `json:"bytes_out"`
	Drops        DropCounts `json:"drops"`
	QueuedBytes  int        `json:"queued_bytes"`
	LastActivity time.Time  `json:"last_activity"`
}

// DropCounts are a connection's drops by reason (see relay.DropReason).
type DropCounts struct {
	QueueHead    uint64 `json:"queue_head"`
	QueueTail    uint64 `json:"queue_tail"`
	NotPermitted uint64 `json:"not_permitted"`
	SenderClosed uint64 `json:"sender_closed"`
	QueueBudget  uint64 `json:"queue_budget"`
	// Drops no connection is charged with (counted on the node, in
	// relay.Stats): always 0 here, listed so the report names every reason.
	NoReaders uint64 `json:"no_readers"`
	BusLost   uint64 `json:"bus_lost"`
}

// Report returns the status of every connection, oldest first.
func Report(rs *relay.Server) []ConnReport {
	conns := rs.Connections()
	out := make([]ConnReport, len(conns))
	for i, cs := range conns {
		drops := DropCounts{
			QueueHead:    cs.DropsByReason[relay.DropQueueHead],
			QueueTail:    cs.DropsByReason[relay.DropQueueTail],
			NotPermitted: cs.DropsByReason[relay.DropNotPermitted],
			SenderClosed: cs.DropsByReason[relay.DropSenderClosed],
			QueueBudget:  cs.DropsByReason[relay.DropQueueBudget],
		}
		scopes := cs.Info.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		out[i] = ConnReport{
			Topic: cs.Info.Topic, CanRead: cs.Info.CanRead, CanWrite: cs.Info.CanWrite,
			ConnectedAt: cs.ConnectedAt.UTC(), ExpiresAt: cs.Info.ExpiresAt.UTC(),
			RemoteAddr: cs.Info.RemoteAddr, UserAgent: cs.Info.UserAgent, Scopes: scopes,
			ID: strconv.FormatUint(cs.ID, 10), Prefix: cs.Info.Prefix, BookingID: cs.Info.BookingID, Sub: cs.Info.Subject,
			MessagesIn: cs.MessagesIn, BytesIn: cs.BytesIn, MessagesOut: cs.MessagesOut, BytesOut: cs.BytesOut,
			Drops: drops, QueuedBytes: cs.QueuedBytes, LastActivity: cs.LastActivity.UTC(),
		}
	}
	return out
}

// HeaderHealth names, on every /status answer, the cluster's health as this
// node sees it (HealthOK or HealthDegraded; ClusterStatus.Health), so that
// the practable-format array need not change.
const HeaderHealth = "Switchboard-Health"

// StatusCluster is the value of /status's "node" parameter that asks for
// the cluster report instead of this node's connections.
const StatusCluster = "all"

// serveStatus serves GET /status: this node's connections (the practable
// format), or with ?node=all the cluster's report (ClusterReport).
func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request, _ *auth.Claims) {
	q := r.URL.Query()
	node, all := q.Get("node"), false
	switch {
	case len(q["node"]) > 1:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "node is given more than once")
		return
	case node == StatusCluster:
		all = true
	case node != "":
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", `node must be "all" (every node's summary) or absent (this node's connections)`)
		return
	}
	if h.cfg.Cluster == nil {
		if all {
			apierr.WriteNew(w, http.StatusServiceUnavailable, "cluster_status_unavailable", "this server has no cluster status")
			return
		}
		apierr.WriteJSON(w, http.StatusOK, Report(h.cfg.Relay))
		return
	}
	if all {
		report := h.cfg.Cluster.Report(r.Context())
		w.Header().Set(HeaderHealth, report.Health)
		apierr.WriteJSON(w, http.StatusOK, report)
		return
	}
	health, _ := h.cfg.Cluster.Health()
	w.Header().Set(HeaderHealth, health)
	apierr.WriteJSON(w, http.StatusOK, Report(h.cfg.Relay))
}

// StatsPublisher publishes the status report on the stats topic every
// interval and soon after any connect or disconnect (debounced), while the
// topic has readers.
type StatsPublisher struct {
	relay    *relay.Server  // set by Start
	cluster  *ClusterStatus // set by PublishCluster; nil: no cluster section
	every    time.Duration
	debounce time.Duration
	changed  chan struct{} // capacity 1
	done     chan struct{}
	// summarised is when the last Summary was made; owned by run.
	summarised time.Time
	stopOnce   sync.Once
	wg         sync.WaitGroup
}

// NewStatsPublisher returns a publisher; every 0 means DefaultStatsEvery.
// Call Changed from the relay's connect and close hooks (it may be called
// before Start: changes are remembered), Start with the relay once it
// exists, and Stop to end it.
func NewStatsPublisher(every time.Duration) *StatsPublisher {
	if every <= 0 {
		every = DefaultStatsEvery
	}
	return &StatsPublisher{every: every, debounce: 250 * time.Millisecond,
		changed: make(chan struct{}, 1), done: make(chan struct{})}
}

// Changed notes that a connection came or went. It never blocks.
func (p *StatsPublisher) Changed() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// PublishCluster adds the cluster section to every report once c has seen
// another node (ClusterStatus.OthersSeen): after the connection arrays, one
// message {"cluster": ClusterReport} (every node's summary and totals,
// gathered over the bus). Consumers of the practable format, which expect
// arrays, can skip it by its shape; a node on its own never sends it, so it
// publishes exactly what it published before. Call it before Start.
func (p *StatsPublisher) PublishCluster(c *ClusterStatus) { p.cluster = c }

// Start publishes rs's report until Stop. Call it once.
func (p *StatsPublisher) Start(rs *relay.Server) {
	p.relay = rs
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.run()
	}()
}

// Stop ends the publisher and waits for it.
func (p *StatsPublisher) Stop() {
	p.stopOnce.Do(func() { close(p.done) })
	p.wg.Wait()
}

func (p *StatsPublisher) run() {
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	// debounce is armed by the first change after a publish; later
	// changes ride along, so a burst of connects costs one report within
	// p.debounce of its start.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	armed := false
	for {
		select {
		case <-p.done:
			return
		case <-p.changed:
			if !armed {
				debounce.Reset(p.debounce)
				armed = true
			}
			continue
		case <-debounce.C:
			armed = false
		case <-tick.C:
		}
		p.publish()
	}
}

func (p *StatsPublisher) publish() {
	p.publishSummary()
	p.publishChanges()
	if p.relay.Readers(StatsTopic) == 0 {
		return
	}
	for _, b := range reportMessages(Report(p.relay), p.relay.Config().MaxMessageBytes) {
		p.relay.Publish(StatsTopic, relay.Message{Type: relay.Text, Data: b})
	}
	if p.cluster == nil || !p.cluster.OthersSeen() {
		return
	}
	// Gather waits at most the status timeout for each member, in parallel.
	b, err := json.Marshal(clusterSection{Cluster: p.cluster.Report(context.Background())})
	if err == nil {
		p.relay.Publish(StatsTopic, relay.Message{Type: relay.Text, Data: b})
	}
}

// publishSummary publishes the node's Summary on SummaryTopic, and the
// cluster section after it (as on StatsTopic), while it has readers.
func (p *StatsPublisher) publishSummary() {
	if p.relay.Readers(SummaryTopic) == 0 {
		return
	}
	now := time.Now()
	b, err := json.Marshal(Summarise(p.relay, now, p.summarised))
	p.summarised = now
	if err != nil {
		return
	}
	p.relay.Publish(SummaryTopic, relay.Message{Type: relay.Text, Data: b})
	if p.cluster == nil || !p.cluster.OthersSeen() {
		return
	}
	if b, err := json.Marshal(clusterSection{Cluster: p.cluster.Report(context.Background())}); err == nil {
		p.relay.Publish(SummaryTopic, relay.Message{Type: relay.Text, Data: b})
	}
}

// publishChanges publishes a ChangeNotice on ChangesTopic while it has
// readers.
func (p *StatsPublisher) publishChanges() {
	if p.relay.Readers(ChangesTopic) == 0 {
		return
	}
	if b, err := json.Marshal(ChangeNotice{Time: time.Now().UTC(), Connections: p.relay.Stats().Connections}); err == nil {
		p.relay.Publish(ChangesTopic, relay.Message{Type: relay.Text, Data: b})
	}
}

// clusterSection is the stats topic's cluster message.
type clusterSection struct {
	Cluster ClusterReport `json:"cluster"`
}

// reportMessages encodes a report as JSON arrays of at most max bytes each:
// one message normally; several, each an array of some connections, when
// there are too many connections for one message to be delivered.
func reportMessages[Conn any](report []Conn, max int) [][]byte {
	b, err := json.Marshal(report)
	if err != nil {
		return nil
	}
	if len(b) <= max || len(report) <= 1 {
		return [][]byte{b}
	}
	half := len(report) / 2
	return append(reportMessages(report[:half], max), reportMessages(report[half:], max)...)
}
