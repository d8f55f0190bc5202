package control

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Metrics is the Prometheus view of the relay. Counters owned elsewhere
// (relay, access) are read at scrape time, so the hot paths carry no
// metrics code of their own.
type Metrics struct {
	h           *Handler
	registry    *prometheus.Registry
	http        http.Handler
	revocations *prometheus.CounterVec
	storeTime   *prometheus.HistogramVec
}

func newMetrics(h *Handler) *Metrics {
	m := &Metrics{h: h, registry: prometheus.NewRegistry()}
	m.revocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_revocations_total", Help: "Revocations applied, by kind.",
	}, []string{"kind"})
	m.storeTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "switchboard_store_seconds", Help: "Latency of store operations.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"op", "outcome"})
	m.registry.MustRegister(m.revocations, m.storeTime, &relayCollector{h: h}, coalesceCollector{h.cfg.Relay},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if h.cfg.Cluster != nil {
		m.registry.MustRegister(&clusterCollector{c: h.cfg.Cluster})
	}
	m.http = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return m
}

func (m *Metrics) observeStore(op string, d time.Duration, err error) {
	outcome := "ok"
	switch {
	case errors.Is(err, store.ErrUnavailable):
		outcome = "unavailable"
	case err != nil:
		outcome = "error"
	}
	m.storeTime.WithLabelValues(op, outcome).Observe(d.Seconds())
}

// ServeHTTP serves the metrics in the Prometheus text format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.http.ServeHTTP(w, r) }

// serveScoped adapts ServeHTTP to the scoped handlers of the main listener.
func (m *Metrics) serveScoped(w http.ResponseWriter, r *http.Request, _ *auth.Claims) {
	m.ServeHTTP(w, r)
}

// closeCodeLabel is the "code" label of switchboard_closes_total for a
// relay close reason: the code the server sends for it (pkg/wire), "peer"
// when the peer closed with a code of its own, "none" when no close frame
// was exchanged (the connection broke).
func closeCodeLabel(r relay.CloseReason) string {
	w := wire.CloseReason(r.String())
	if code, ok := w.Code(); ok {
		return strconv.Itoa(int(code))
	}
	if w == wire.ReasonPeerClosed {
		return "peer"
	}
	return "none"
}

var (
	descConns     = prometheus.NewDesc("switchboard_connections", "Open relay connections, by prefix.", []string{"prefix"}, nil)
	descTopics    = prometheus.NewDesc("switchboard_topics", "Topics with at least one connection.", nil, nil)
	descAccepted  = prometheus.NewDesc("switchboard_connections_accepted_total", "Relay connections accepted.", nil, nil)
	descMsgs      = prometheus.NewDesc("switchboard_messages_total", "Messages received from peers (in) and written to peers (out).", []string{"direction"}, nil)
	descBytes     = prometheus.NewDesc("switchboard_bytes_total", "Payload bytes received from peers (in) and written to peers (out).", []string{"direction"}, nil)
	descDrops     = prometheus.NewDesc("switchboard_drops_total", "Messages not delivered, by reason.", []string{"reason"}, nil)
	descCloses    = prometheus.NewDesc("switchboard_closes_total", "Connections closed, by reason and the close code sent.", []string{"reason", "code"}, nil)
	descOutcomes  = prometheus.NewDesc("switchboard_access_total", "Access requests (stage access), code exchanges (stage exchange) and one-step connects (stage connect), by outcome.", []string{"stage", "outcome"}, nil)
	descRefused   = prometheus.NewDesc("switchboard_requests_refused_total", "HTTP requests refused before any handler: rate_limited (429, per client address) and overloaded (503, descriptors running out); and too_many_waits (429, blocking job WAITs over a subject's limit).", []string{"reason"}, nil)
	descRevActive = prometheus.NewDesc("switchboard_revocations_active", "Revocations in force, by kind.", []string{"kind"}, nil)
	descQueued    = prometheus.NewDesc("switchboard_queued_bytes", "Bytes in all send queues, counted once per receiver (what --queue-budget bounds).", nil, nil)
	descBudget    = prometheus.NewDesc("switchboard_queue_budget_bytes", "The node's bound on switchboard_queued_bytes (--queue-budget).", nil, nil)
	descPubReqs   = prometheus.NewDesc("switchboard_publish_requests_total", "HTTP publish requests (POST /api/v1/publish), by outcome: ok or the error code of the refusal (rate_limited: over the limit per token or per address).", []string{"outcome"}, nil)
	descPubMsgs   = prometheus.NewDesc("switchboard_publish_messages_total", "Messages published over HTTP, by the first segment of the topic; past the first "+strconv.Itoa(access.MaxPublishPrefixLabels)+" prefixes seen, \""+access.PublishOtherPrefix+"\" counts the rest.", []string{"prefix"}, nil)
	descPubBytes  = prometheus.NewDesc("switchboard_publish_bytes_total", "Payload bytes published over HTTP, by the first segment of the topic (as switchboard_publish_messages_total).", []string{"prefix"}, nil)
	descJobsEnded = prometheus.NewDesc("switchboard_jobs_ended_total", "Jobs this node ended, by final phase: COMPLETED, ERROR or ABORTED (a matrix job and each of its combinations count apart; a cluster's totals are the sums over its nodes).", []string{"phase"}, nil)
	descRevEvents = prometheus.NewDesc("switchboard_revocation_events_total", "Revocation changes by outcome: applied on this node (its own and other nodes'), published to the other nodes, publish_failed, missed (gaps in another node's sequence), ignored_bad_json and ignored_invalid (received events that changed nothing).", []string{"outcome"}, nil)
)

// relayCollector reads the relay's and access handler's counters at scrape
// time.
type relayCollector struct{ h *Handler }

func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descTopics, descAccepted, descMsgs, descBytes, descDrops, descCloses, descOutcomes, descRefused, descRevActive, descQueued, descBudget, descRevEvents, descPubReqs, descPubMsgs, descPubBytes, descJobsEnded} {
		ch <- d
	}
}

func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	rs := c.h.cfg.Relay
	st := rs.Stats()
	byPrefix := map[string]int{}
	for _, cs := range rs.Connections() {
		byPrefix[cs.Info.Prefix]++
	}
	for p, n := range byPrefix {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(n), p)
	}
	ch <- prometheus.MustNewConstMetric(descTopics, prometheus.GaugeValue, float64(st.Topics))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(st.QueuedBytes))
	ch <- prometheus.MustNewConstMetric(descBudget, prometheus.GaugeValue, float64(st.QueueBudget))
	ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(st.Accepted))
	ch <- prometheus.MustNewConstMetric(descMsgs, prometheus.CounterValue, float64(st.MessagesIn), "in")
	ch <- prometheus.MustNewConstMetric(descMsgs, prometheus.CounterValue, float64(st.MessagesOut), "out")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesIn), "in")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesOut), "out")
	for reason, n := range st.Drops {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), reason)
	}
	for _, r := range relay.CloseReasons() {
		ch <- prometheus.MustNewConstMetric(descCloses, prometheus.CounterValue, float64(st.Closes[r.String()]), r.String(), closeCodeLabel(r))
	}
	if a := c.h.cfg.Access; a != nil {
		for stage, outcomes := range a.Outcomes() {
			for outcome, n := range outcomes {
				ch <- prometheus.MustNewConstMetric(descOutcomes, prometheus.CounterValue, float64(n), stage, outcome)
			}
		}
		ps := a.PublishStats()
		for outcome, n := range ps.Requests {
			ch <- prometheus.MustNewConstMetric(descPubReqs, prometheus.CounterValue, float64(n), outcome)
		}
		for prefix, n := range ps.Messages {
			ch <- prometheus.MustNewConstMetric(descPubMsgs, prometheus.CounterValue, float64(n), prefix)
			ch <- prometheus.MustNewConstMetric(descPubBytes, prometheus.CounterValue, float64(ps.Bytes[prefix]), prefix)
		}
	}
	if c.h.cfg.Refusals != nil {
		for reason, n := range c.h.cfg.Refusals() {
			ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(n), reason)
		}
	}
	if c.h.cfg.JobOutcomes != nil {
		for phase, n := range c.h.cfg.JobOutcomes() {
			ch <- prometheus.MustNewConstMetric(descJobsEnded, prometheus.CounterValue, float64(n), phase)
		}
	}
	if e := c.h.cfg.Enforcer; e != nil {
		es := e.Stats()
		for outcome, n := range map[string]uint64{"applied": es.Applied, "published": es.Published, "publish_failed": es.PublishFailed,
			"missed": es.Missed, "ignored_bad_json": es.Ignored["bad_json"], "ignored_invalid": es.Ignored["invalid"]} {
			ch <- prometheus.MustNewConstMetric(descRevEvents, prometheus.CounterValue, float64(n), outcome)
		}
	}
	counts := map[store.RevocationKind]int{store.RevokeBooking: 0, store.RevokeSubject: 0, store.RevokeToken: 0}
	for _, rv := range c.h.cfg.Revocations.List("") {
		counts[rv.Kind]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descRevActive, prometheus.GaugeValue, float64(n), string(k))
	}
}

// Cluster metrics. Each node exports its own counters only; the cluster's
// totals are the scraper's sums over the nodes (Prometheus scrapes every
// node), never proxied from one node. What a node adds about the others is
// the membership it sees.
var (
	descMembers     = prometheus.NewDesc("switchboard_cluster_members", "Nodes up in the cluster as this node sees it, this one included.", nil, nil)
	descMemberUp    = prometheus.NewDesc("switchboard_cluster_member_up", "1 for each node up, 0 for a node that went down within the last minute and has not come back.", []string{"node"}, nil)
	descBusUp       = prometheus.NewDesc("switchboard_cluster_bus_connected", "1 while this node's bus connection is up (always 1 on the in-memory bus).", nil, nil)
	descClusterSick = prometheus.NewDesc("switchboard_cluster_degraded", "1 while this node sees the cluster degraded: its bus disconnected or a member down (see /status?node=all).", nil, nil)
)

// clusterCollector reads the bus's membership at scrape time.
type clusterCollector struct{ c *ClusterStatus }

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembers, descMemberUp, descBusUp, descClusterSick} {
		ch <- d
	}
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	up, down := cc.c.membersUp()
	ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(len(up)))
	seen := make(map[string]bool, len(up))
	for _, m := range up {
		seen[m.ID] = true
		ch <- prometheus.MustNewConstMetric(descMemberUp, prometheus.GaugeValue, 1, m.ID)
	}
	for _, l := range down {
		if !seen[l.Member.ID] {
			ch <- prometheus.MustNewConstMetric(descMemberUp, prometheus.GaugeValue, 0, l.Member.ID)
		}
	}
	connected := 0.0
	if cc.c.busHealth().Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(descBusUp, prometheus.GaugeValue, connected)
	degraded := 0.0
	if health, _ := cc.c.Health(); health == HealthDegraded {
		degraded = 1
	}
	ch <- prometheus.MustNewConstMetric(descClusterSick, prometheus.GaugeValue, degraded)
}
