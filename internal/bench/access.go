package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Defaults of AccessOptions.
const (
	DefaultAccessTopic   = "bench/access"
	DefaultAccessClients = 64
	DefaultAccessSources = 16
	// DefaultAccessMax bounds the exchanges of one run.
	DefaultAccessMax = 2_000_000
	// accessOpTimeout bounds each access request, code exchange and close.
	accessOpTimeout = 10 * time.Second
	// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (not in package
	// syscall): bind the source address now, choose the port at connect.
	ipBindAddressNoPort = 24
)

// AccessOptions configure Access.
type AccessOptions struct {
	// URL is the relay's base URL (loopback only). Required.
	URL string
	// Token grants read on Topic (all clients then use Topic itself); if
	// empty, a token for Topic/* is minted with Secret and client i uses
	// Topic/c<i>.
	Token  string
	Secret []byte
	// Topic (default bench/access).
	Topic string
	// Clients is the number of concurrent clients (default 64).
	Clients int
	// Sources spreads the websocket connections over this many loopback
	// source addresses 127.0.0.2, 127.0.0.3, … (default 16): every exchange
	// is a new TCP connection, and the ports of closed ones stay in
	// TIME_WAIT for a minute.
	Sources int
	// Duration is how long the clients loop (default 5 s).
	Duration time.Duration
	// Max bounds the number of exchanges (default 2,000,000).
	Max int
	// Raw uses a minimal client written on plain sockets (HTTP/1.1 and the
	// websocket handshakes by hand) instead of pkg/client, so that the
	// client takes less of the machine.
	Raw bool
	// NoKeepAlive sends each access request on a new connection, which
	// the server closes after its answer (Connection: close), instead of
	// over a pool of keep-alive connections.
	NoKeepAlive bool
	// OneStep connects in one step, the token in the websocket handshake
	// (wire.BearerSubprotocol), instead of the access request and the
	// websocket with the code.
	OneStep bool
	// Baseline: URL is the access baseline (AccessBaselineHandler: a bare
	// websocket upgrade, no auth, no relay), driven by the one-step loop
	// with a stand-in token; no token or secret is needed.
	Baseline bool
	// ServerPID, if positive, is read for CPU time and peak RSS.
	ServerPID int
}

// AccessResult is what Access measured.
type AccessResult struct {
	Scenario string `json:"scenario"` // "access"
	URL      string `json:"url"`
	Client   string `json:"client"` // "pkg/client" or "raw"
	Flow     string `json:"flow"`   // "two-step" (access request, websocket with the code), "one-step" (token in the handshake) or "baseline" (one step to AccessBaselineHandler)
	// AccessKeepAlive: the two-step flow's access requests reuse
	// keep-alive connections (AccessOptions.NoKeepAlive unset).
	AccessKeepAlive bool    `json:"access_keep_alive"`
	Clients         int     `json:"clients"`
	Sources         int     `json:"sources"`
	DurationSec     float64 `json:"duration_sec"`
	// Exchanges counts completed cycles: access request, websocket with the
	// code, close.
	Exchanges       uint64  `json:"exchanges"`
	ExchangesPerSec float64 `json:"exchanges_per_sec"`
	Errors          uint64  `json:"errors"`
	FirstError      string  `json:"first_error,omitempty"`
	// Latency of each stage: POST of the token (a keep-alive connection;
	// none in one step), websocket connection with the code or, in one
	// step, the token (TCP connect, upgrade, checks), close handshake; and
	// the whole cycle.
	AccessUS   LatencyUS `json:"access_us"`
	ExchangeUS LatencyUS `json:"exchange_us"`
	CloseUS    LatencyUS `json:"close_us"`
	TotalUS    LatencyUS `json:"total_us"`

	ClientCPUSec       float64  `json:"client_cpu_sec"`
	ServerCPUSec       *float64 `json:"server_cpu_sec,omitempty"`
	ServerPeakRSSBytes *int64   `json:"server_peak_rss_bytes,omitempty"`
}

// noClientRetries is Options.Retries of the load generators' clients:
// they count each refusal (and storm fails on a 5xx), which pkg/client's
// retries of 429 and 503 would wait out and hide.
const noClientRetries = -1

// exchanger runs access + code exchange cycles: access requests over a
// pool of keep-alive connections, websockets from rotating loopback source
// addresses.
type exchanger struct {
	url        string
	oneStep    bool // connect with the token in the handshake (AccessOptions.OneStep)
	post       *client.Options
	ws         []*client.Options
	transports []*http.Transport
	next       atomic.Uint64
}

func newExchanger(url string, sources, keepAlive int, noKeepAlive bool) *exchanger {
	e := &exchanger{url: url}
	pt := &http.Transport{MaxIdleConns: keepAlive, MaxIdleConnsPerHost: keepAlive, IdleConnTimeout: time.Minute, DisableKeepAlives: noKeepAlive}
	e.transports = append(e.transports, pt)
	e.post = &client.Options{HTTPClient: &http.Client{Transport: pt}, Retries: noClientRetries}
	for i := range sources {
		// A websocket takes its connection out of the pool, so the pool
		// of these transports never holds any.
		t := &http.Transport{DialContext: sourceDialer(i).DialContext, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Second}
		e.transports = append(e.transports, t)
		e.ws = append(e.ws, &client.Options{HTTPClient: &http.Client{Transport: t}, Retries: noClientRetries})
	}
	return e
}

// sourceDialer dials from loopback address number i (127.0.0.2 for 0),
// choosing the port at connect time, so that a port is only busy for one
// destination.
func sourceDialer(i int) *net.Dialer {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, byte((i+2)>>8), byte(i+2))}
	return &net.Dialer{
		LocalAddr: src,
		Timeout:   accessOpTimeout,
		Control: func(_, _ string, c syscall.RawConn) error {
			// Best effort: without it, bind picks the port.
			return c.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
		},
	}
}

func (e *exchanger) close() {
	for _, t := range e.transports {
		t.CloseIdleConnections()
	}
}

// dial posts token for topic and opens the websocket with the code, from
// the next source address. It returns the time each stage took.
func (e *exchanger) dial(ctx context.Context, topic, token string) (c *client.Conn, access, exchange time.Duration, err error) {
	t0 := time.Now()
	if e.oneStep {
		c, err = client.DialOneStep(ctx, e.url, topic, token, e.ws[e.next.Add(1)%uint64(len(e.ws))])
		return c, 0, time.Since(t0), err
	}
	uri, err := client.Access(ctx, e.url, topic, token, e.post)
	if err != nil {
		return nil, 0, 0, err
	}
	t1 := time.Now()
	c, err = client.DialURI(ctx, uri, e.ws[e.next.Add(1)%uint64(len(e.ws))])
	if err != nil {
		return nil, t1.Sub(t0), 0, err
	}
	return c, t1.Sub(t0), time.Since(t1), nil
}

// accessStats are one client's measurements.
type accessStats struct {
	n, errs                      uint64
	firstErr                     error
	access, exchange, cls, total Histogram
}

// Access measures the access endpoint and the code exchange: Clients
// clients each loop over POST token → websocket with the code → close, for
// Duration or until Max exchanges in all.
func Access(ctx context.Context, o AccessOptions) (AccessResult, error) {
	if o.Topic == "" {
		o.Topic = DefaultAccessTopic
	}
	if o.Clients <= 0 {
		o.Clients = DefaultAccessClients
	}
	if o.Sources <= 0 {
		o.Sources = DefaultAccessSources
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Max <= 0 {
		o.Max = DefaultAccessMax
	}
	res := AccessResult{Scenario: "access", URL: o.URL, Client: "pkg/client", Flow: "two-step", Clients: o.Clients, Sources: o.Sources,
		AccessKeepAlive: !o.NoKeepAlive}
	if o.Baseline {
		o.OneStep, o.Token, o.Secret = true, baselineBearerToken, nil
	}
	switch {
	case o.Baseline:
		res.Flow = "baseline"
	case o.OneStep:
		res.Flow = "one-step"
	}
	if o.Raw {
		res.Client = "raw"
	}
	if err := CheckLoopbackURL(o.URL); err != nil {
		return res, err
	}
	topics := make([]string, o.Clients)
	token := o.Token
	switch {
	case o.Baseline:
		for i := range topics {
			topics[i] = fmt.Sprintf("%s/c%d", o.Topic, i)
		}
	case token != "":
		for i := range topics {
			topics[i] = o.Topic
		}
	case len(o.Secret) == 0:
		return res, errors.New("bench: a token or a secret is needed")
	default:
		var err error
		token, err = mintToken(o.Secret, o.URL, o.Duration+time.Hour, func(c *auth.Claims) {
			c.Topic, c.Prefix, c.Scopes = o.Topic+"/*", client.DefaultPrefix, []string{auth.ScopeRead}
		})
		if err != nil {
			return res, err
		}
		for i := range topics {
			topics[i] = fmt.Sprintf("%s/c%d", o.Topic, i)
		}
	}
	// cycles[i] runs client i's cycles.
	cycles := make([]func(ctx context.Context) (a, x, c time.Duration, err error), o.Clients)
	if o.Raw {
		dialers := make([]*net.Dialer, o.Sources)
		for i := range dialers {
			dialers[i] = sourceDialer(i)
		}
		var next atomic.Uint64
		for i := range cycles {
			rc, err := newRawClient(o.URL, client.DefaultPrefix, topics[i], token, o.OneStep, o.NoKeepAlive,
				func(n uint64) *net.Dialer { return dialers[n%uint64(len(dialers))] }, func() uint64 { return next.Add(1) })
			if err != nil {
				return res, err
			}
			defer rc.close()
			cycles[i] = rc.cycle
		}
	} else {
		e := newExchanger(o.URL, o.Sources, o.Clients, o.NoKeepAlive)
		e.oneStep = o.OneStep
		defer e.close()
		for i := range cycles {
			cycles[i] = func(ctx context.Context) (a, x, cl time.Duration, err error) {
				c, a, x, err := e.dial(ctx, topics[i], token)
				if err != nil {
					return a, x, 0, err
				}
				t := time.Now()
				err = c.Close()
				return a, x, time.Since(t), err
			}
		}
	}

	// One cycle first: a relay that refuses gives one clear error.
	if err := func() error {
		cctx, cancel := context.WithTimeout(ctx, accessOpTimeout)
		defer cancel()
		_, _, _, err := cycles[0](cctx)
		return err
	}(); err != nil {
		return res, fmt.Errorf("bench: access: %w", err)
	}

	stats := make([]accessStats, o.Clients)
	var started atomic.Int64
	cpu0, _ := ProcCPU(os.Getpid())
	var scpu0 time.Duration
	var serr error
	if o.ServerPID > 0 {
		scpu0, serr = ProcCPU(o.ServerPID)
	}
	start := time.Now()
	deadline := start.Add(o.Duration)
	var wg sync.WaitGroup
	for i := range stats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[i]
			for ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= int64(o.Max) {
				err := func() error {
					octx, cancel := context.WithTimeout(ctx, accessOpTimeout)
					defer cancel()
					t0 := time.Now()
					a, x, cl, err := cycles[i](octx)
					if err != nil {
						return err
					}
					st.access.Record(a.Nanoseconds())
					st.exchange.Record(x.Nanoseconds())
					st.cls.Record(cl.Nanoseconds())
					st.total.Record(time.Since(t0).Nanoseconds())
					return nil
				}()
				if err != nil {
					st.errs++
					if st.firstErr == nil {
						st.firstErr = err
					}
					continue
				}
				st.n++
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := ProcCPU(os.Getpid())
	if o.ServerPID > 0 && serr == nil {
		if scpu1, err := ProcCPU(o.ServerPID); err == nil {
			v := (scpu1 - scpu0).Seconds()
			res.ServerCPUSec = &v
		}
		if rss, err := ProcPeakRSS(o.ServerPID); err == nil {
			res.ServerPeakRSSBytes = &rss
		}
	}
	res.ClientCPUSec = (cpu1 - cpu0).Seconds()
	res.DurationSec = elapsed.Seconds()

	var access, exchange, cls, total Histogram
	for i := range stats {
		st := &stats[i]
		res.Exchanges += st.n
		res.Errors += st.errs
		if st.firstErr != nil && res.FirstError == "" {
			res.FirstError = st.firstErr.Error()
		}
		access.Merge(&st.access)
		exchange.Merge(&st.exchange)
		cls.Merge(&st.cls)
		total.Merge(&st.total)
	}
	res.ExchangesPerSec = float64(res.Exchanges) / elapsed.Seconds()
	res.AccessUS, res.ExchangeUS, res.CloseUS, res.TotalUS = latencyUS(&access), latencyUS(&exchange), latencyUS(&cls), latencyUS(&total)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

// WriteTable writes r as a human-readable table.
func (r *AccessResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	switch r.Flow {
	case "baseline":
		row("scenario", "access baseline (bare websocket upgrade, no auth, no relay): %d clients (%s) looping websocket → close; %d source addresses", r.Clients, r.Client, r.Sources)
	case "one-step":
		row("scenario", "access, one step: %d clients (%s) looping websocket with the token in the handshake → close; %d source addresses", r.Clients, r.Client, r.Sources)
	default:
		conn := "keep-alive"
		if !r.AccessKeepAlive {
			conn = "a new connection each"
		}
		row("scenario", "access: %d clients (%s) looping POST token (%s) → websocket with the code → close; %d source addresses", r.Clients, r.Client, conn, r.Sources)
	}
	row("relay", "%s", r.URL)
	row("measured", "%.3f s", r.DurationSec)
	row("exchanges", "%d (%.0f per second); errors %d", r.Exchanges, r.ExchangesPerSec, r.Errors)
	if r.FirstError != "" {
		row("first error", "%s", r.FirstError)
	}
	if r.Flow == "two-step" {
		row("access µs", "%s", latencyRow(r.AccessUS))
	}
	row("exchange µs", "%s", latencyRow(r.ExchangeUS))
	row("close µs", "%s", latencyRow(r.CloseUS))
	row("cycle µs", "%s", latencyRow(r.TotalUS))
	row("client CPU", "%.2f s (%.0f%% of one core)", r.ClientCPUSec, 100*r.ClientCPUSec/r.DurationSec)
	if r.ServerCPUSec != nil {
		row("server CPU", "%.2f s (%.0f%% of one core)", *r.ServerCPUSec, 100**r.ServerCPUSec/r.DurationSec)
		if r.Exchanges > 0 {
			row("server CPU per exchange", "%.0f µs", 1e6**r.ServerCPUSec/float64(r.Exchanges))
		}
	}
	if r.ServerPeakRSSBytes != nil {
		row("server peak RSS", "%.1f MiB", float64(*r.ServerPeakRSSBytes)/(1<<20))
	}
	return tw.Flush()
}
