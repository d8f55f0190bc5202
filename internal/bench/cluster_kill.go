package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Defaults of ClusterKillOptions.
const (
	DefaultKillClients = 1_000
	DefaultKillTopics  = 100
	DefaultKillProbes  = 8
	DefaultKillTimeout = 30 * time.Second
	// killFirstBackoff and killMaxBackoff pace a client's reconnection
	// attempts after a failed one (doubling, with ±50 % jitter), as the
	// client library's reconnecting clients do.
	killFirstBackoff = 50 * time.Millisecond
	killMaxBackoff   = time.Second
)

// ClusterKillOptions configure ClusterKill.
type ClusterKillOptions struct {
	// Clients connected to the victim (default 1,000), over Topics topics
	// (default 100).
	Clients, Topics int
	// Victim is the index of the node killed (default 1: the second).
	Victim int
	// Probes is the number of loops of new sessions on the survivors
	// (access POST, websocket GET, close), timed from the kill until every
	// client is back (default 8).
	Probes int
	// Timeout bounds each client's reconnection, from the kill
	// (default 30 s).
	Timeout time.Duration
	// Kill kills node i (SIGKILL for a process). Required.
	Kill func(i int) error
}

// ClusterKillResult is what ClusterKill measured.
type ClusterKillResult struct {
	Scenario   string   `json:"scenario"` // "cluster-kill"
	Victim     string   `json:"victim"`
	Survivors  []string `json:"survivors"`
	Clients    int      `json:"clients"`
	ConnectSec float64  `json:"connect_sec"`
	// Reconnected counts the victim's clients connected again (to a
	// survivor) within the timeout; ReconnectMS is from the kill to each
	// one's new websocket; Attempts counts their tries, failed included.
	Reconnected    int            `json:"reconnected"`
	NotReconnected int            `json:"not_reconnected"`
	ReconnectMS    LatencyMS      `json:"reconnect_ms"`
	ReconnectedTo  map[string]int `json:"reconnected_to"`
	Attempts       int            `json:"attempts"`
	// AccessMS are the survivors' new sessions (access POST and websocket
	// GET) begun after the kill, until every client was back; AccessFailed
	// counts those that failed.
	AccessMS     LatencyMS `json:"access_ms"`
	AccessOK     int       `json:"access_ok"`
	AccessFailed int       `json:"access_failed"`
	// Status5xx counts 5xx answers any client got after the kill.
	Status5xx  int        `json:"status_5xx"`
	FirstError string     `json:"first_error,omitempty"`
	CPU        ClusterCPU `json:"cpu"`
}

// ClusterKill measures losing a node: Clients clients connect to the
// victim (access and websocket there); meanwhile Probes loops open new
// sessions on the survivors. The victim is killed; each of its clients,
// on losing its connection, reconnects without a load balancer by trying
// the survivors' URLs in turn (starting at a different one per client),
// backing off after a failure. Reported: reconnection time from the kill,
// the survivors' session latency while the clients come back, and every
// 5xx answer.
func ClusterKill(ctx context.Context, t ClusterTarget, o ClusterKillOptions) (ClusterKillResult, error) {
	if o.Clients <= 0 {
		o.Clients = DefaultKillClients
	}
	if o.Topics <= 0 {
		o.Topics = DefaultKillTopics
	}
	if o.Victim == 0 {
		o.Victim = 1
	}
	if o.Probes <= 0 {
		o.Probes = DefaultKillProbes
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultKillTimeout
	}
	res := ClusterKillResult{Scenario: "cluster-kill", Clients: o.Clients, ReconnectedTo: map[string]int{}}
	if err := t.check(2); err != nil {
		return res, err
	}
	switch {
	case o.Kill == nil:
		return res, errors.New("bench: kill: no way to kill a node")
	case o.Victim < 0 || o.Victim >= len(t.Nodes):
		return res, fmt.Errorf("bench: kill: victim %d of %d nodes", o.Victim, len(t.Nodes))
	}
	victim := t.Nodes[o.Victim]
	var survivors []ClusterNode
	for i, n := range t.Nodes {
		if i != o.Victim {
			survivors = append(survivors, n)
			res.Survivors = append(res.Survivors, n.ID)
		}
	}
	res.Victim = victim.ID
	// Each client, and each probe, has a token of its own, as real clients
	// do: one token's pending codes are bounded (100), which a thousand
	// clients coming back at once through one token would exceed.
	tokenFor := func(n ClusterNode, who string) (string, error) {
		return mintToken(t.Secret, n.Audience, o.Timeout+time.Hour, func(c *auth.Claims) {
			c.Topic, c.Prefix, c.Scopes, c.Subject = "bench/kill/*", client.DefaultPrefix, []string{auth.ScopeRead}, who
		})
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}
	defer hc.CloseIdleConnections()
	copts := &client.Options{HTTPClient: hc, Retries: noClientRetries}
	session := func(ctx context.Context, n ClusterNode, topic, who string) (*client.Conn, error) {
		tok, err := tokenFor(n, who)
		if err != nil {
			return nil, err
		}
		uri, err := accessOn(ctx, n, topic, tok, copts)
		if err != nil {
			return nil, err
		}
		return client.DialURI(ctx, uri, copts)
	}

	// The victim's clients.
	conns := make([]*client.Conn, o.Clients)
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err := parallel(cctx, o.Clients, 32, func(i int) error {
		c, err := session(cctx, victim, fmt.Sprintf("bench/kill/t%d", i%o.Topics), fmt.Sprintf("client%d", i))
		conns[i] = c
		return err
	})
	cancel()
	var mu sync.Mutex // guards conns (replaced on reconnection) and what the goroutines report
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	if err != nil {
		return res, fmt.Errorf("bench: connect to %s: %w", victim.ID, err)
	}
	res.ConnectSec = time.Since(start).Seconds()

	var killAt atomic.Int64 // Unix ns; 0 before the kill
	var ending atomic.Bool  // the scenario gave up: clients do not come back
	var status5xx atomic.Int64
	note := func(err error) {
		if httpStatusOf(err) >= 500 {
			status5xx.Add(1)
		}
		mu.Lock()
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
		mu.Unlock()
	}

	// Survivors' new sessions, until stopProbes.
	stopProbes := make(chan struct{})
	probeHists := make([]Histogram, o.Probes)
	var probeOK, probeFailed atomic.Int64
	var pwg sync.WaitGroup
	for p := range o.Probes {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopProbes:
					return
				case <-ctx.Done():
					return
				default:
				}
				n := survivors[(p+i)%len(survivors)]
				t0 := time.Now()
				after := killAt.Load() != 0
				sctx, cancel := context.WithTimeout(ctx, accessOpTimeout)
				c, err := session(sctx, n, fmt.Sprintf("bench/kill/probe%d", p), fmt.Sprintf("probe%d", p))
				cancel()
				if !after {
					if err == nil {
						c.CloseNow()
					}
					continue
				}
				if err != nil {
					probeFailed.Add(1)
					note(fmt.Errorf("new session on %s: %w", n.ID, err))
					continue
				}
				probeHists[p].Record(time.Since(t0).Nanoseconds())
				probeOK.Add(1)
				c.CloseNow()
			}
		}()
	}
	defer func() {
		select {
		case <-stopProbes:
		default:
			close(stopProbes)
		}
		pwg.Wait()
	}()

	// Each client waits for its connection to end, then comes back.
	back := make([]int64, o.Clients) // ns from the kill; 0: not back
	backTo := make([]string, o.Clients)
	attempts := make([]int, o.Clients)
	var cwg sync.WaitGroup
	for i, c := range conns {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					break
				}
			}
			k := killAt.Load()
			if k == 0 || ending.Load() {
				return // closed by the bench, not by the kill
			}
			deadline := time.Unix(0, k).Add(o.Timeout)
			backoff := killFirstBackoff
			topic := fmt.Sprintf("bench/kill/t%d", i%o.Topics)
			for a := 0; ctx.Err() == nil && !ending.Load(); a++ {
				n := survivors[(i+a)%len(survivors)]
				attempts[i]++
				sctx, cancel := context.WithDeadline(ctx, deadline)
				nc, err := session(sctx, n, topic, fmt.Sprintf("client%d", i))
				cancel()
				if err == nil {
					back[i], backTo[i] = time.Now().UnixNano()-k, n.ID
					mu.Lock()
					conns[i] = nc
					mu.Unlock()
					return
				}
				note(fmt.Errorf("client %d reconnecting to %s: %w", i, n.ID, err))
				wait := time.Duration(float64(backoff) * (0.5 + rand.Float64()))
				if time.Now().Add(wait).After(deadline) {
					return
				}
				timer := time.NewTimer(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
				}
				backoff = min(2*backoff, killMaxBackoff)
			}
		}()
	}

	cpu := startClusterCPU(&t)
	killAt.Store(time.Now().UnixNano())
	if err := o.Kill(o.Victim); err != nil {
		ending.Store(true)
		return res, err
	}
	cwg.Wait() // each client is bounded by the timeout
	close(stopProbes)
	pwg.Wait()
	res.CPU = cpu.stop()

	var rh, ph Histogram
	for i := range back {
		res.Attempts += attempts[i]
		if back[i] == 0 {
			res.NotReconnected++
			continue
		}
		res.Reconnected++
		res.ReconnectedTo[backTo[i]]++
		rh.Record(back[i])
	}
	for i := range probeHists {
		ph.Merge(&probeHists[i])
	}
	res.ReconnectMS, res.AccessMS = latencyMS(&rh), latencyMS(&ph)
	res.AccessOK, res.AccessFailed = int(probeOK.Load()), int(probeFailed.Load())
	res.Status5xx = int(status5xx.Load())
	return res, ctx.Err()
}

// handshakeStatus finds the HTTP status in a refused websocket handshake's
// error (pkg/client's websocket library reports it only in its text).
var handshakeStatus = regexp.MustCompile(`status code 101 but got (\d{3})|HTTP (\d{3})`)

// httpStatusOf returns the HTTP status an access request or websocket
// handshake was refused with, or 0.
func httpStatusOf(err error) int {
	var ae *client.AccessError
	if errors.As(err, &ae) {
		return ae.Status
	}
	if err == nil {
		return 0
	}
	m := handshakeStatus.FindStringSubmatch(err.Error())
	if m == nil {
		return 0
	}
	s, _ := strconv.Atoi(m[1] + m[2])
	return s
}

// WriteTable writes r as a human-readable table.
func (r *ClusterKillResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	ms := func(l LatencyMS) string {
		return fmt.Sprintf("p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms", l.P50, l.P90, l.P99, l.Max)
	}
	row("scenario", "kill -9 of %s with %d clients; they reconnect by trying %v in turn (no load balancer)", r.Victim, r.Clients, r.Survivors)
	row("connect", "%.1f s", r.ConnectSec)
	row("reconnected", "%d of %d (%v) in %d attempts; not reconnected %d", r.Reconnected, r.Clients, r.ReconnectedTo, r.Attempts, r.NotReconnected)
	row("reconnect time", "%s (from the kill)", ms(r.ReconnectMS))
	row("survivors' new sessions", "%s (%d ok, %d failed, while the clients came back)", ms(r.AccessMS), r.AccessOK, r.AccessFailed)
	row("5xx answers", "%d", r.Status5xx)
	if r.FirstError != "" {
		row("first error", "%s", r.FirstError)
	}
	r.CPU.writeRows(row)
	return tw.Flush()
}
