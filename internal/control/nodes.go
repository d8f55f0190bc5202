package control

// The cluster's status: every node's summary (counts, not connections),
// gathered over the bus (cluster.StatusExchange) for GET /status?node=all,
// the stats topic's cluster section and the dashboard's overview, plus the
// node's health as it sees the cluster. The per-connection report stays
// node-local: it is large (issue 17), and each node serves its own.

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/relay"
)

// Node states in a summary: the answer /readyz gives.
const (
	StateReady    = "ready"
	StateJoining  = "joining"
	StateDraining = "draining"
)

// Health of the cluster as a node sees it (ClusterReport.Health).
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
)

// Problem codes of a degraded report.
const (
	ProblemBusDisconnected    = "bus_disconnected"     // this node's bus connection is down
	ProblemMemberDown         = "member_down"          // a member went down and has not come back
	ProblemMemberNotAnswering = "member_not_answering" // a member up did not answer in time
)

// BusHealth is the state of a node's bus connection.
type BusHealth struct {
	Kind      string `json:"kind"` // "memory" or "nats"
	Connected bool   `json:"connected"`
	// Routes is the embedded NATS server's route connections (several per
	// peer); 0 for an external NATS or the in-memory bus.
	Routes             int    `json:"routes"`
	Disconnects        uint64 `json:"disconnects"`
	Reconnects         uint64 `json:"reconnects"`
	SlowConsumerEvents uint64 `json:"slow_consumer_events"`
}

// PeerCounts are the relay's traffic over the bus (cluster.RelayStats).
type PeerCounts struct {
	Forwarded     uint64 `json:"forwarded"`      // messages published for other nodes
	PublishErrors uint64 `json:"publish_errors"` // messages the bus refused
	Received      uint64 `json:"received"`       // messages received from other nodes
	RemoteTopics  int    `json:"remote_topics"`  // topics another node reads now
	LocalTopics   int    `json:"local_topics"`   // topics this node subscribes to now
	Members       int    `json:"members"`        // other nodes this node's relay knows
}

// Counts are a node's (or the cluster's) relay counters.
type Counts struct {
	Connections int    `json:"connections"`
	Topics      int    `json:"topics"` // in Totals: summed over nodes, so a topic open on two nodes counts twice
	Readers     int    `json:"readers"`
	Writers     int    `json:"writers"`
	Accepted    uint64 `json:"accepted"`
	MessagesIn  uint64 `json:"messages_in"`
	BytesIn     uint64 `json:"bytes_in"`
	MessagesOut uint64 `json:"messages_out"`
	BytesOut    uint64 `json:"bytes_out"`
	QueuedBytes int64  `json:"queued_bytes"`
	// Drops by reason (relay.DropReason names), every reason listed.
	Drops map[string]uint64 `json:"drops"`
}

func (c *Counts) add(o Counts) {
	c.Connections += o.Connections
	c.Topics += o.Topics
	c.Readers += o.Readers
	c.Writers += o.Writers
	c.Accepted += o.Accepted
	c.MessagesIn += o.MessagesIn
	c.BytesIn += o.BytesIn
	c.MessagesOut += o.MessagesOut
	c.BytesOut += o.BytesOut
	c.QueuedBytes += o.QueuedBytes
	if c.Drops == nil {
		c.Drops = map[string]uint64{}
	}
	for reason, n := range o.Drops {
		c.Drops[reason] += n
	}
}

// NodeSummary is what a node answers on <prefix>.node.<id>.status.
type NodeSummary struct {
	Node    string    `json:"node"`
	Started time.Time `json:"started"`
	State   string    `json:"state"` // StateReady, StateJoining or StateDraining
	// Version is the node's build (buildinfo.Version): a rolling upgrade
	// shows which nodes run which release.
	Version string `json:"version"`
	Counts
	Bus   BusHealth  `json:"bus"`
	Peers PeerCounts `json:"peers"`
}

// Node statuses in a ClusterReport.
const (
	NodeUp           = "up"            // answered: Summary is set
	NodeNotAnswering = "not_answering" // a member, but no answer within the timeout
	NodeDown         = "down"          // went down (DownSince) and has not come back
)

// NodeReport is one node in a ClusterReport.
type NodeReport struct {
	Node      string       `json:"node"`
	Status    string       `json:"status"` // NodeUp, NodeNotAnswering or NodeDown
	Joined    time.Time    `json:"joined"` // when it joined the bus, as the bus saw it
	DownSince *time.Time   `json:"down_since,omitempty"`
	Error     string       `json:"error,omitempty"`
	Summary   *NodeSummary `json:"summary,omitempty"`
}

// Problem is one reason a report is degraded.
type Problem struct {
	Code    string `json:"code"`
	Node    string `json:"node,omitempty"`
	Message string `json:"message"`
}

// ClusterReport is GET /status?node=all and the stats topic's cluster
// section. See docs/control.md.
type ClusterReport struct {
	Node     string    `json:"node"` // the node that made the report
	At       time.Time `json:"at"`
	Health   string    `json:"health"` // HealthOK or HealthDegraded
	Problems []Problem `json:"problems"`
	Members  int       `json:"members"` // nodes up, this one included
	// Nodes: every member (up or not answering), then the members that
	// went down, each group ordered by id.
	Nodes []NodeReport `json:"nodes"`
	// Totals sums the Counts of the nodes that answered.
	Totals Counts `json:"totals"`
}

// ClusterConfig configures a ClusterStatus.
type ClusterConfig struct {
	Bus   cluster.Bus   // required
	Relay *relay.Server // required
	// Peers, if set, gives the relay's traffic over the bus.
	Peers  *cluster.RelayPeers
	Prefix string // bus subject prefix; "" means cluster.DefaultPrefix
	// BusHealth, if set, reports the bus connection; nil means the
	// in-memory bus, always connected.
	BusHealth func() BusHealth
	// State, if set, returns StateReady, StateJoining or StateDraining;
	// nil means always ready.
	State func() string
	// Timeout and RememberLost: cluster.StatusConfig's.
	Timeout, RememberLost time.Duration
	// OnMembers, if set, is called after each change of membership (on a
	// goroutine of the bus; it must not block): the stats publisher's
	// Changed, so that a node that goes down leaves the dashboard at once.
	OnMembers func()
	// Version is this node's build, reported in its summary.
	Version string
	Now     func() time.Time
}

// ClusterStatus serves this node's summary to the other nodes and gathers
// theirs.
type ClusterStatus struct {
	cfg     ClusterConfig
	started time.Time
	x       *cluster.StatusExchange
	// othersSeen latches once another node has been up: from then on the
	// node is part of a cluster (OthersSeen).
	othersSeen atomic.Bool
}

// NewClusterStatus starts answering status requests on the bus. Close it
// before the bus.
func NewClusterStatus(cfg ClusterConfig) (*ClusterStatus, error) {
	if cfg.Bus == nil || cfg.Relay == nil {
		return nil, errors.New("control: cluster status: Bus and Relay are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &ClusterStatus{cfg: cfg, started: cfg.Now()}
	x, err := cluster.NewStatusExchange(cluster.StatusConfig{Bus: cfg.Bus, Prefix: cfg.Prefix,
		Local: func() ([]byte, error) { return json.Marshal(c.Summary()) }, Timeout: cfg.Timeout,
		RememberLost: cfg.RememberLost, OnMembers: c.onMembers, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	c.x = x
	return c, nil
}

// onMembers is called for each change of another member.
func (c *ClusterStatus) onMembers() {
	c.othersSeen.Store(true)
	if c.cfg.OnMembers != nil {
		c.cfg.OnMembers()
	}
}

// OthersSeen reports whether another node has ever been up: the node is in
// a cluster, not on its own (`switchboard serve` always runs on a bus, an
// in-memory one of its own when no cluster flag is given).
func (c *ClusterStatus) OthersSeen() bool { return c.othersSeen.Load() }

// Close stops answering. It may be called more than once.
func (c *ClusterStatus) Close() { c.x.Close() }

// busHealth returns this node's bus connection state.
func (c *ClusterStatus) busHealth() BusHealth {
	if c.cfg.BusHealth == nil {
		return BusHealth{Kind: "memory", Connected: true}
	}
	return c.cfg.BusHealth()
}

// Summary returns this node's summary now.
func (c *ClusterStatus) Summary() NodeSummary {
	rs := c.cfg.Relay
	st := rs.Stats()
	s := NodeSummary{Node: c.cfg.Bus.NodeID(), Started: c.started.UTC(), State: StateReady, Version: c.cfg.Version, Bus: c.busHealth(),
		Counts: Counts{Connections: st.Connections, Topics: st.Topics, Accepted: st.Accepted,
			MessagesIn: st.MessagesIn, BytesIn: st.BytesIn, MessagesOut: st.MessagesOut, BytesOut: st.BytesOut,
			QueuedBytes: st.QueuedBytes, Drops: make(map[string]uint64, len(st.Drops))}}
	for _, r := range relay.DropReasons() {
		s.Drops[r.String()] = st.Drops[r.String()]
	}
	for _, cs := range rs.Connections() {
		if cs.Info.CanRead {
			s.Readers++
		}
		if cs.Info.CanWrite {
			s.Writers++
		}
	}
	if c.cfg.State != nil {
		s.State = c.cfg.State()
	}
	if p := c.cfg.Peers; p != nil {
		ps := p.Stats()
		s.Peers = PeerCounts{Forwarded: ps.Forwarded, PublishErrors: ps.PublishErrors, Received: ps.Received,
			RemoteTopics: ps.RemoteTopics, LocalTopics: ps.LocalTopics, Members: ps.Members}
	}
	return s
}

// Health returns this node's view of the cluster's health without asking
// the other nodes: degraded while its bus is disconnected or a member is
// down. (Report also counts members that do not answer.)
func (c *ClusterStatus) Health() (string, []Problem) {
	var problems []Problem
	if bh := c.busHealth(); !bh.Connected {
		problems = append(problems, Problem{Code: ProblemBusDisconnected, Message: "this node's " + bh.Kind + " bus connection is down: it serves its local topics only"})
	}
	for _, l := range c.x.Lost() {
		problems = append(problems, Problem{Code: ProblemMemberDown, Node: l.Member.ID,
			Message: "node " + l.Member.ID + " went down at " + l.Since.UTC().Format(time.RFC3339) + " and has not come back"})
	}
	if len(problems) > 0 {
		return HealthDegraded, problems
	}
	return HealthOK, []Problem{}
}

// Report gathers every member's summary (each within the timeout) and
// returns the cluster's report.
func (c *ClusterStatus) Report(ctx context.Context) ClusterReport {
	answers := c.x.Gather(ctx)
	health, problems := c.Health()
	r := ClusterReport{Node: c.cfg.Bus.NodeID(), At: c.cfg.Now().UTC(), Members: len(answers),
		Nodes: make([]NodeReport, 0, len(answers)), Totals: Counts{Drops: map[string]uint64{}}}
	for _, reason := range relay.DropReasons() {
		r.Totals.Drops[reason.String()] = 0
	}
	for _, a := range answers {
		nr := NodeReport{Node: a.Member.ID, Joined: a.Member.Started.UTC()}
		var s NodeSummary
		err := a.Err
		if err == nil {
			err = json.Unmarshal(a.Summary, &s)
		}
		if err != nil {
			nr.Status, nr.Error = NodeNotAnswering, err.Error()
			problems = append(problems, Problem{Code: ProblemMemberNotAnswering, Node: a.Member.ID,
				Message: "node " + a.Member.ID + " is a member but did not answer: " + err.Error()})
		} else {
			nr.Status, nr.Summary = NodeUp, &s
			r.Totals.add(s.Counts)
		}
		r.Nodes = append(r.Nodes, nr)
	}
	for _, l := range c.x.Lost() {
		since := l.Since.UTC()
		r.Nodes = append(r.Nodes, NodeReport{Node: l.Member.ID, Status: NodeDown, Joined: l.Member.Started.UTC(), DownSince: &since})
	}
	if len(problems) > 0 {
		health = HealthDegraded
	}
	r.Health, r.Problems = health, problems
	return r
}

// membersUp returns the members up now and those that went down (still
// remembered), for metrics.
func (c *ClusterStatus) membersUp() (up []cluster.Member, down []cluster.LostMember) {
	return c.cfg.Bus.Members(), c.x.Lost()
}
