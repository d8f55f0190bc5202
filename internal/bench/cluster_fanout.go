package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
)

// DefaultClusterFanoutTopic is the topic of ClusterFanout.
const DefaultClusterFanoutTopic = "bench/cluster-fanout"

// ClusterFanoutOptions configure ClusterFanout: the fields of FanoutOptions
// that apply (one writer, one topic, lean readers). Zero values mean
// Fanout's defaults.
type ClusterFanoutOptions struct {
	Topic    string
	Readers  int
	Size     int
	Rate     float64
	Duration time.Duration
	// Warmup: zero means the default, negative none.
	Warmup, Drain, ConnectTimeout time.Duration
	// Client configures the writer and the access requests; nil means the
	// client's defaults.
	Client *client.Options
}

// ClusterReaderGroup is what one group of readers (those on the writer's
// node, or those on the other nodes) received.
type ClusterReaderGroup struct {
	Readers   int    `json:"readers"`
	Delivered uint64 `json:"delivered"` // measured messages received
	// Drops is, summed over the group's readers, measured messages sent
	// minus those received.
	Drops uint64 `json:"drops"`
	// LatencyUS (paced runs only): one-way, writer send to reader receipt.
	LatencyUS *LatencyUS `json:"latency_us,omitempty"`
}

// ClusterFanoutResult is what ClusterFanout measured.
type ClusterFanoutResult struct {
	Scenario       string         `json:"scenario"` // "cluster-fanout"
	Nodes          []string       `json:"nodes"`
	WriterNode     string         `json:"writer_node"`
	ReadersPerNode map[string]int `json:"readers_per_node"`
	// All is the whole fan-out as Fanout reports it (all readers).
	All       FanoutResult       `json:"all"`
	SameNode  ClusterReaderGroup `json:"same_node"`
	CrossNode ClusterReaderGroup `json:"cross_node"`
	// AddedLatencyUS (paced runs): cross-node minus same-node quantiles.
	AddedLatencyUS *LatencyUS `json:"added_latency_us,omitempty"`
	// CPU covers connecting, warm-up, the measured window and the drain.
	CPU ClusterCPU `json:"cpu"`
	// SingleNode, when the caller ran it, is `bench fanout` with the same
	// options on one node; Ratio is the cluster's delivered/s over it.
	SingleNode *FanoutResult `json:"single_node,omitempty"`
	Ratio      *float64      `json:"ratio,omitempty"`
}

// ClusterFanout runs the fan-out scenario across the cluster: one writer
// on the first node, Readers readers spread evenly over all nodes (reader
// i on node i mod n, each through its node's access endpoint and its own
// websocket there), one topic. It reports the fan-out as a whole and, per
// group, the readers on the writer's node and those on the others: their
// drops and, paced, their latency and the difference.
func ClusterFanout(ctx context.Context, t ClusterTarget, opts ClusterFanoutOptions) (ClusterFanoutResult, error) {
	res := ClusterFanoutResult{Scenario: "cluster-fanout", ReadersPerNode: map[string]int{}}
	if err := t.check(2); err != nil {
		return res, err
	}
	for _, n := range t.Nodes {
		res.Nodes = append(res.Nodes, n.ID)
	}
	res.WriterNode = t.Nodes[0].ID
	if opts.Topic == "" {
		opts.Topic = DefaultClusterFanoutTopic
	}
	fo := FanoutOptions{URL: t.Nodes[0].URL, Topic: opts.Topic, Readers: opts.Readers, Size: opts.Size, Rate: opts.Rate,
		Duration: opts.Duration, Warmup: opts.Warmup, Drain: opts.Drain, ConnectTimeout: opts.ConnectTimeout,
		Client: opts.Client, ReaderClient: ReaderClientLean}
	o, err := fo.scenarioDefaults(0)
	if err != nil {
		return res, err
	}
	ttl := o.ConnectTimeout + syncTimeout + o.Warmup + o.Duration + o.Drain + time.Hour
	tr := &clusterTransport{target: t, topic: o.Topic, opts: o.Client, size: o.Size, timed: o.Rate > 0}
	for _, n := range t.Nodes {
		tok, err := MintToken(t.Secret, n.Audience, o.Topic, ttl)
		if err != nil {
			return res, err
		}
		tr.tokens = append(tr.tokens, tok)
	}
	cpu := startClusterCPU(&t)
	all, err := runScenario(ctx, o, tr)
	res.CPU = cpu.stop()
	res.All = all
	if err != nil {
		return res, err
	}
	// runScenario has waited for every reader goroutine: the readers'
	// counts are final.
	var same, cross Histogram
	for _, c := range tr.readers {
		res.ReadersPerNode[t.Nodes[c.node].ID]++
		g, h := &res.CrossNode, &cross
		if c.node == 0 {
			g, h = &res.SameNode, &same
		}
		g.Readers++
		g.Delivered += c.received
		if all.Sent > c.received {
			g.Drops += all.Sent - c.received
		}
		h.Merge(&c.hist)
	}
	if tr.timed {
		s, x := latencyUS(&same), latencyUS(&cross)
		res.SameNode.LatencyUS, res.CrossNode.LatencyUS = &s, &x
		res.AddedLatencyUS = &LatencyUS{P50: x.P50 - s.P50, P90: x.P90 - s.P90, P99: x.P99 - s.P99, P999: x.P999 - s.P999, Max: x.Max - s.Max}
	}
	return res, nil
}

// clusterTransport connects the fan-out's writer to the first node and its
// readers round robin to every node.
type clusterTransport struct {
	target ClusterTarget
	topic  string
	tokens []string // per node: read and write on topic, for its audience
	opts   *client.Options
	size   int
	timed  bool // readers record latency

	next    atomic.Int64 // readers dialled so far
	mu      sync.Mutex
	readers []*clusterReaderConn
}

func (t *clusterTransport) parallelDials() int { return dialParallel }

func (t *clusterTransport) dialReader(ctx context.Context, _ int) (msgConn, error) {
	node := int((t.next.Add(1) - 1) % int64(len(t.target.Nodes)))
	uri, err := accessOn(ctx, t.target.Nodes[node], t.topic, t.tokens[node], t.opts)
	if err != nil {
		return nil, err
	}
	var h http.Header
	if t.opts != nil {
		h = t.opts.Header
	}
	lc, err := dialLean(ctx, uri, h, t.size)
	if err != nil {
		return nil, err
	}
	c := &clusterReaderConn{msgConn: lc, node: node, timed: t.timed}
	t.mu.Lock()
	t.readers = append(t.readers, c)
	t.mu.Unlock()
	return c, nil
}

func (t *clusterTransport) dialWriter(ctx context.Context, _ int) (msgConn, error) {
	uri, err := accessOn(ctx, t.target.Nodes[0], t.topic, t.tokens[0], t.opts)
	if err != nil {
		return nil, err
	}
	c, err := client.DialURI(ctx, uri, t.opts)
	if err != nil {
		return nil, err
	}
	// The writer reads too, so that it answers pings and sees a close.
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return &wsConn{Conn: c}, nil
}

// accessOn asks node's access endpoint for a websocket URI for topic and
// returns it pointing at node.
func accessOn(ctx context.Context, node ClusterNode, topic, token string, opts *client.Options) (string, error) {
	uri, err := client.Access(ctx, node.URL, topic, token, opts)
	if err != nil {
		return "", fmt.Errorf("access on %s: %w", node.ID, err)
	}
	return onNode(uri, node)
}

// clusterReaderConn is a reader connection that also counts, and paced
// times, the measured messages it reads, so that readers can be grouped by
// node. Its fields are written only by the reader goroutine.
type clusterReaderConn struct {
	msgConn
	node     int
	timed    bool
	received uint64
	hist     Histogram
}

func (c *clusterReaderConn) ReadMessage() ([]byte, error) {
	data, err := c.msgConn.ReadMessage()
	if err != nil || len(data) < headerSize {
		return data, err
	}
	if binary.LittleEndian.Uint64(data[8:])&(flagMeasured|flagProbe|flagEnd) == flagMeasured {
		c.received++
		if c.timed {
			c.hist.Record(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(data)))
		}
	}
	return data, nil
}

// WriteTable writes r as a human-readable table.
func (r *ClusterFanoutResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	a := &r.All
	rate := "unpaced"
	if a.Rate > 0 {
		rate = fmt.Sprintf("%g msg/s", a.Rate)
	}
	row("scenario", "cluster fan-out: 1 writer on %s → %d readers over nodes %v (%v), %d B, %s", r.WriterNode, a.Readers, r.Nodes, r.ReadersPerNode, a.Size, rate)
	row("measured", "%.3f s (after %.3f s warm-up; connect %.3f s; drain %.3f s)", a.DurationSec, a.WarmupSec, a.ConnectSec, a.DrainSec)
	row("sent", "%d (%.0f/s)", a.Sent, a.SentPerSec)
	row("delivered", "%d (%.0f/s, %.1f MB/s); received in window %.0f/s", a.Delivered, a.DeliveredPerSec, a.MBPerSec, a.ReceivedInWindowPerSec)
	row("drops", "%d (same node %d, other nodes %d); gaps %d; reordered %d; incomplete readers %d", a.Drops, r.SameNode.Drops, r.CrossNode.Drops, a.Gaps, a.Reordered, a.Incomplete)
	if a.FirstError != "" {
		row("first error", "%s (%d readers failed)", a.FirstError, a.ReaderErrors)
	}
	row("latency µs, all", "%s", latencyRow(a.LatencyUS))
	if r.SameNode.LatencyUS != nil {
		row(fmt.Sprintf("  same node (%d)", r.SameNode.Readers), "%s", latencyRow(*r.SameNode.LatencyUS))
		row(fmt.Sprintf("  other nodes (%d)", r.CrossNode.Readers), "%s", latencyRow(*r.CrossNode.LatencyUS))
		d := r.AddedLatencyUS
		row("added latency µs", "p50 %s  p99 %s  p99.9 %s (other nodes minus same node)", us(d.P50), us(d.P99), us(d.P999))
	}
	if a.WriterMaxLateUS != nil {
		row("writer late", "at most %s µs behind schedule", us(*a.WriterMaxLateUS))
	}
	r.CPU.writeRows(row)
	if r.SingleNode != nil {
		s := r.SingleNode
		row("single node", "`bench fanout`, same options: delivered %.0f/s, drops %d, latency %s", s.DeliveredPerSec, s.Drops, latencyRow(s.LatencyUS))
	}
	if r.Ratio != nil {
		row("cluster / single node", "%.3f (delivered/s)", *r.Ratio)
	}
	return tw.Flush()
}
