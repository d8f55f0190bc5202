package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Defaults of ForeignCodeOptions.
const (
	DefaultForeignCodeTopic  = "bench/code"
	DefaultForeignCodeRounds = 4_000
)

// ForeignCodeOptions configure ForeignCode.
type ForeignCodeOptions struct {
	// Topic (default bench/code).
	Topic string
	// Rounds is the number of handshakes, half with the websocket on the
	// code's node and half on another (default 4,000).
	Rounds int
	// Client configures the access requests.
	Client *client.Options
}

// CodeGroup is the handshakes whose websocket GET went to one kind of
// node.
type CodeGroup struct {
	Handshakes int `json:"handshakes"`
	// HandshakeUS is the access POST plus the websocket GET (until its
	// 101); GetUS the GET alone.
	HandshakeUS LatencyUS `json:"handshake_us"`
	GetUS       LatencyUS `json:"get_us"`
}

// ForeignCodeResult is what ForeignCode measured.
type ForeignCodeResult struct {
	Scenario   string `json:"scenario"` // "foreign-code"
	AccessNode string `json:"access_node"`
	Rounds     int    `json:"rounds"`
	// Local: the GET went to the node that issued the code; Foreign: to
	// another node, which takes the code from its issuer over the bus.
	Local   CodeGroup `json:"local"`
	Foreign CodeGroup `json:"foreign"`
	// AddedUS is Foreign minus Local, handshake quantiles.
	AddedUS    LatencyUS  `json:"added_us"`
	Errors     int        `json:"errors"`
	FirstError string     `json:"first_error,omitempty"`
	CPU        ClusterCPU `json:"cpu"`
}

// ForeignCode measures what redeeming a code on another node than its
// issuer adds to the handshake: Rounds times, one after the other, an
// access POST on the first node (which has the topic's home node issue the
// code, or issues it itself), then the websocket GET with its code,
// alternately on the node the code names (its suffix) and on one of the
// others (round robin), which takes the code from its issuer over the bus;
// then the connection is dropped.
func ForeignCode(ctx context.Context, t ClusterTarget, o ForeignCodeOptions) (ForeignCodeResult, error) {
	if o.Topic == "" {
		o.Topic = DefaultForeignCodeTopic
	}
	if o.Rounds <= 0 {
		o.Rounds = DefaultForeignCodeRounds
	}
	res := ForeignCodeResult{Scenario: "foreign-code", Rounds: o.Rounds}
	if err := t.check(2); err != nil {
		return res, err
	}
	res.AccessNode = t.Nodes[0].ID
	token, err := mintToken(t.Secret, t.Nodes[0].Audience, 24*time.Hour, func(c *auth.Claims) {
		c.Topic, c.Prefix, c.Scopes = o.Topic, client.DefaultPrefix, []string{auth.ScopeRead}
	})
	if err != nil {
		return res, err
	}
	copts := client.Options{Retries: noClientRetries}
	if o.Client != nil {
		copts = *o.Client
	}
	if copts.HTTPClient == nil {
		tr := &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second}
		defer tr.CloseIdleConnections()
		copts.HTTPClient = &http.Client{Transport: tr}
	}

	var hs, get [2]Histogram // [0] local, [1] foreign
	cpu := startClusterCPU(&t)
	for i := 0; i < o.Rounds && ctx.Err() == nil; i++ {
		foreign := i%2 == 1
		total, getTime, getNode, err := codeRound(ctx, t, foreign, i/2, o.Topic, token, &copts)
		if err != nil {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("round %d (GET on %s): %v", i, getNode, err)
			}
			continue
		}
		k := 0
		if foreign {
			k = 1
		}
		hs[k].Record(total.Nanoseconds())
		get[k].Record(getTime.Nanoseconds())
	}
	res.CPU = cpu.stop()
	res.Local = CodeGroup{Handshakes: int(hs[0].Count()), HandshakeUS: latencyUS(&hs[0]), GetUS: latencyUS(&get[0])}
	res.Foreign = CodeGroup{Handshakes: int(hs[1].Count()), HandshakeUS: latencyUS(&hs[1]), GetUS: latencyUS(&get[1])}
	l, f := res.Local.HandshakeUS, res.Foreign.HandshakeUS
	res.AddedUS = LatencyUS{P50: f.P50 - l.P50, P90: f.P90 - l.P90, P99: f.P99 - l.P99, P999: f.P999 - l.P999, Max: f.Max - l.Max}
	if res.Local.Handshakes == 0 || res.Foreign.Handshakes == 0 {
		return res, errors.New("bench: foreign-code: no handshake of one kind succeeded: " + res.FirstError)
	}
	return res, ctx.Err()
}

// codeRound is one handshake: the access POST on the first node, then the
// GET on the node that issued the code or, if foreign, on the other-th of
// the other nodes (modulo their number). It returns both together, the GET
// alone, and the id of the node the GET went to.
func codeRound(ctx context.Context, t ClusterTarget, foreign bool, other int, topic, token string, copts *client.Options) (total, get time.Duration, getNode string, err error) {
	octx, cancel := context.WithTimeout(ctx, accessOpTimeout)
	defer cancel()
	t0 := time.Now()
	uri, err := client.Access(octx, t.Nodes[0].URL, topic, token, copts)
	if err != nil {
		return 0, 0, "", fmt.Errorf("access: %w", err)
	}
	t1 := time.Now()
	u, err := url.Parse(uri)
	if err != nil {
		return 0, 0, "", errors.New("access returned an unparsable URI")
	}
	issuer, ok := wire.ParseCode(u.Query().Get("code"))
	if !ok {
		return 0, 0, "", errors.New("access returned a URI without a valid code")
	}
	var target ClusterNode
	var others []ClusterNode
	for _, n := range t.Nodes {
		if n.ID == issuer {
			target = n
		} else {
			others = append(others, n)
		}
	}
	if target.ID == "" {
		return 0, 0, "", fmt.Errorf("the code names node %q, which is not one of the cluster's", issuer)
	}
	if foreign {
		target = others[other%len(others)]
	}
	if uri, err = onNode(uri, target); err != nil {
		return 0, 0, target.ID, err
	}
	c, err := dialLean(octx, uri, copts.Header, 0)
	if err != nil {
		return 0, 0, target.ID, fmt.Errorf("websocket: %w", err)
	}
	t2 := time.Now()
	_ = c.CloseNow()
	return t2.Sub(t0), t2.Sub(t1), target.ID, nil
}

// WriteTable writes r as a human-readable table.
func (r *ForeignCodeResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("scenario", "foreign code: %d handshakes one at a time, access POST on %s, websocket GET alternately on the node the code names and on another", r.Rounds, r.AccessNode)
	row("errors", "%d", r.Errors)
	if r.FirstError != "" {
		row("first error", "%s", r.FirstError)
	}
	row(fmt.Sprintf("GET on the code's node (%d)", r.Local.Handshakes), "handshake µs %s", latencyRow(r.Local.HandshakeUS))
	row("", "GET alone µs %s", latencyRow(r.Local.GetUS))
	row(fmt.Sprintf("GET on another node (%d)", r.Foreign.Handshakes), "handshake µs %s", latencyRow(r.Foreign.HandshakeUS))
	row("", "GET alone µs %s", latencyRow(r.Foreign.GetUS))
	row("added by a foreign code µs", "p50 %s  p99 %s  p99.9 %s", us(r.AddedUS.P50), us(r.AddedUS.P99), us(r.AddedUS.P999))
	r.CPU.writeRows(row)
	return tw.Flush()
}
