package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// ClusterDenyResult is what ClusterDeny measured.
type ClusterDenyResult struct {
	Scenario   string   `json:"scenario"` // "cluster-deny"
	Nodes      []string `json:"nodes"`
	DenyNode   string   `json:"deny_node"`
	Conns      int      `json:"conns"`
	Denied     int      `json:"denied"`
	ConnectSec float64  `json:"connect_sec"`
	// DenyResponseMS is the round trip of POST /bids/deny on DenyNode.
	DenyResponseMS float64 `json:"deny_response_ms"`
	// DisconnectMS are quantiles, over the denied connections, of the time
	// from sending the deny to the client seeing its connection close;
	// DisconnectByNodeMS the same per node the connection was on.
	DisconnectMS       LatencyMS            `json:"disconnect_ms"`
	DisconnectByNodeMS map[string]LatencyMS `json:"disconnect_by_node_ms"`
	Closed4003         int                  `json:"closed_4003"`
	// NotClosed counts denied connections not closed within the timeout;
	// WronglyClosed other connections that closed meanwhile. Both must be 0.
	NotClosed     int        `json:"not_closed"`
	WronglyClosed int        `json:"wrongly_closed"`
	CPU           ClusterCPU `json:"cpu"`
}

// ClusterDeny is Deny across a cluster: it opens o.Conns connections,
// connection i on node i mod n (its access POST and websocket both there),
// the first o.Denied of them carrying one booking id (so they are spread
// over the nodes too), on o.Topics topics; then it denies the booking
// through the first node's API and times how long each of its connections,
// on every node, takes to be closed, checking that no other connection
// closes. o.URL and o.Secret are ignored (the target's are used);
// o.StatusRuns is not used.
func ClusterDeny(ctx context.Context, t ClusterTarget, o DenyOptions) (ClusterDenyResult, error) {
	o.setDefaults()
	res := ClusterDenyResult{Scenario: "cluster-deny", Conns: o.Conns, Denied: o.Denied, DisconnectByNodeMS: map[string]LatencyMS{}}
	if err := t.check(1); err != nil {
		return res, err
	}
	if o.Denied > o.Conns || o.Denied < 1 {
		return res, fmt.Errorf("bench: denied %d: want 1 to conns (%d)", o.Denied, o.Conns)
	}
	for _, n := range t.Nodes {
		res.Nodes = append(res.Nodes, n.ID)
	}
	res.DenyNode = t.Nodes[0].ID
	ttl := o.ConnectTimeout + o.Timeout + time.Hour
	mint := func(aud, topic, booking string, scopes ...string) (string, error) {
		return mintToken(t.Secret, aud, ttl, func(c *auth.Claims) {
			c.Topic, c.BookingID, c.Scopes = topic, booking, scopes
			if topic != "" {
				c.Prefix = client.DefaultPrefix
			}
		})
	}
	admin, err := mint(t.Nodes[0].Audience, "", "", auth.ScopeAdmin)
	if err != nil {
		return res, err
	}
	deniedTok, keepTok := make([]string, len(t.Nodes)), make([]string, len(t.Nodes))
	for i, n := range t.Nodes {
		if deniedTok[i], err = mint(n.Audience, "bench/deny/*", deniedBooking, auth.ScopeRead); err != nil {
			return res, err
		}
		if keepTok[i], err = mint(n.Audience, "bench/deny/*", "bench-keep", auth.ScopeRead); err != nil {
			return res, err
		}
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}
	defer hc.CloseIdleConnections()
	copts := &client.Options{HTTPClient: hc, Retries: noClientRetries}
	cctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	conns := make([]*client.Conn, o.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	cpu := startClusterCPU(&t)
	start := time.Now()
	err = parallel(cctx, o.Conns, 32, func(i int) error {
		node := i % len(t.Nodes)
		tok := keepTok[node]
		if i < o.Denied {
			tok = deniedTok[node]
		}
		uri, err := accessOn(cctx, t.Nodes[node], fmt.Sprintf("bench/deny/t%d", i%o.Topics), tok, copts)
		if err != nil {
			return err
		}
		c, err := client.DialURI(cctx, uri, copts)
		conns[i] = c
		return err
	})
	if err != nil {
		return res, fmt.Errorf("bench: connect: %w", err)
	}
	res.ConnectSec = time.Since(start).Seconds()

	// Each connection's reader notes when and how it closed; the last
	// denied one to close says so.
	var deniedClosed atomic.Int64
	allDeniedClosed := make(chan struct{})
	cw := watchCloses(conns, func(i int) {
		if i < o.Denied && deniedClosed.Add(1) == int64(o.Denied) {
			close(allDeniedClosed)
		}
	})
	closedAt, closeCode := cw.at, cw.code
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
		cw.wg.Wait()
	}()

	t0 := time.Now()
	if _, err := httpDo(ctx, hc, http.MethodPost, fmt.Sprintf("%s/bids/deny?bid=%s&exp=%d", t.Nodes[0].URL, deniedBooking, time.Now().Add(time.Hour).Unix()), admin, http.StatusNoContent); err != nil {
		return res, err
	}
	res.DenyResponseMS = float64(time.Since(t0).Nanoseconds()) / 1e6
	timeout := time.NewTimer(o.Timeout)
	select {
	case <-allDeniedClosed:
	case <-timeout.C:
	case <-ctx.Done():
	}
	timeout.Stop()
	res.CPU = cpu.stop()
	var all Histogram
	byNode := make([]Histogram, len(t.Nodes))
	for i := range o.Conns {
		at := closedAt[i].Load()
		switch {
		case i < o.Denied && at == 0:
			res.NotClosed++
		case i < o.Denied:
			all.Record(at - t0.UnixNano())
			byNode[i%len(t.Nodes)].Record(at - t0.UnixNano())
			if wire.CloseCode(closeCode[i].Load()) == wire.CloseDenied {
				res.Closed4003++
			}
		case at != 0:
			res.WronglyClosed++
		}
	}
	res.DisconnectMS = latencyMS(&all)
	for i, n := range t.Nodes {
		res.DisconnectByNodeMS[n.ID] = latencyMS(&byNode[i])
	}
	return res, ctx.Err()
}

// WriteTable writes r as a human-readable table.
func (r *ClusterDenyResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	ms := func(l LatencyMS) string {
		return fmt.Sprintf("p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms", l.P50, l.P90, l.P99, l.Max)
	}
	row("scenario", "cluster deny: %d connections over nodes %v, %d of them on the denied booking; deny through %s's API", r.Conns, r.Nodes, r.Denied, r.DenyNode)
	row("connect", "%.1f s", r.ConnectSec)
	row("deny request", "%.1f ms", r.DenyResponseMS)
	row("disconnect", "%s (from sending the deny to the client seeing the close)", ms(r.DisconnectMS))
	for _, id := range r.Nodes {
		row("  on "+id, "%s", ms(r.DisconnectByNodeMS[id]))
	}
	row("closed with 4003", "%d of %d; not closed %d; other connections closed %d", r.Closed4003, r.Denied, r.NotClosed, r.WronglyClosed)
	r.CPU.writeRows(row)
	return tw.Flush()
}
