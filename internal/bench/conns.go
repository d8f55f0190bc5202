package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// ConnsOptions configure Conns.
type ConnsOptions struct {
	// URL is the relay's base URL (loopback only); Secret signs the
	// tokens. Both required.
	URL    string
	Secret []byte
	// Conns is how many idle connections to open and hold (default 10,000).
	Conns int
	// Sources spreads the client side over this many loopback addresses
	// (127.0.0.2, 127.0.0.3, …) so that the ephemeral ports of one address
	// do not run out (default: one per 5,000 connections; ports left in
	// TIME_WAIT by earlier runs made one address for 19,000 connect at
	// 448/s instead of 3,400/s).
	Sources int
	// Parallel is how many connections are opened at once (default 64).
	Parallel int
	// Hold is how long the connections are held once open, before the
	// server is measured (default 2 s, for the server to settle).
	Hold time.Duration
	// ServerPID, if positive, is read for RSS.
	ServerPID int
}

// ConnsResult is what Conns measured.
type ConnsResult struct {
	Conns             int     `json:"conns"`
	ConnectSec        float64 `json:"connect_sec"`
	HandshakesPerSec  float64 `json:"handshakes_per_sec"` // access + code exchange + websocket, per second
	ServerRSSBefore   int64   `json:"server_rss_before_bytes"`
	ServerRSSHeld     int64   `json:"server_rss_held_bytes"`
	RSSPerConn        float64 `json:"server_rss_per_conn_bytes"`
	GoroutinesBefore  int     `json:"goroutines_before"`
	GoroutinesHeld    int     `json:"goroutines_held"`
	GoroutinesPerConn float64 `json:"goroutines_per_conn"`
}

// Conns opens opts.Conns idle connections, holds them, and measures the
// server's memory and goroutines per connection (RSS from /proc, goroutines
// from the server's /metrics) and the handshake rate.
func Conns(ctx context.Context, o ConnsOptions) (ConnsResult, error) {
	if o.Conns <= 0 {
		o.Conns = 10_000
	}
	if o.Sources <= 0 {
		o.Sources = o.Conns/5_000 + 1
	}
	if o.Parallel <= 0 {
		o.Parallel = 64
	}
	if o.Hold <= 0 {
		o.Hold = 2 * time.Second
	}
	res := ConnsResult{Conns: o.Conns}
	if err := CheckLoopbackURL(o.URL); err != nil {
		return res, err
	}
	if len(o.Secret) == 0 {
		return res, errors.New("bench: the relay's secret is needed to mint tokens")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(o.Conns)+256 > lim.Cur {
		return res, fmt.Errorf("bench: %d connections need as many file descriptors here and in the server, but RLIMIT_NOFILE is %d (hard %d); ask for at most %d", o.Conns, lim.Cur, lim.Max, int(lim.Cur)-256)
	}
	ttl := 2*time.Hour + o.Hold
	tok, err := mintToken(o.Secret, o.URL, ttl, func(c *auth.Claims) {
		c.Topic, c.Prefix, c.Scopes = "bench/conns/*", client.DefaultPrefix, []string{auth.ScopeRead}
	})
	if err != nil {
		return res, err
	}
	stats, err := mintToken(o.Secret, o.URL, ttl, func(c *auth.Claims) { c.Scopes = []string{auth.ScopeStats} })
	if err != nil {
		return res, err
	}

	// One HTTP client per source address: access requests reuse a few
	// keep-alive connections; each websocket gets its own socket from the
	// same source.
	clients := make([]*client.Options, o.Sources)
	for i := range clients {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, byte((i+2)>>8), byte(i+2))}
		d := &net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
		tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}
		clients[i] = &client.Options{HTTPClient: &http.Client{Transport: tr}, Retries: noClientRetries}
		defer tr.CloseIdleConnections()
	}
	hc := &http.Client{Timeout: 30 * time.Second}

	if o.ServerPID > 0 {
		res.ServerRSSBefore, _ = ProcRSS(o.ServerPID)
	}
	res.GoroutinesBefore, _ = metricValue(ctx, hc, o.URL, stats, "go_goroutines")

	conns := make([]*client.Conn, o.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	start := time.Now()
	err = parallel(ctx, o.Conns, o.Parallel, func(i int) error {
		c, err := client.Dial(ctx, o.URL, fmt.Sprintf("bench/conns/t%d", i%1000), tok, clients[i%o.Sources])
		if err != nil {
			return err
		}
		conns[i] = c
		// Read, as an idle application does, so that the library answers
		// the relay's pings (every 30 s by default). Unanswered, each ping
		// holds a write loop, and a goroutine, until its timeout: a run
		// that connects for longer than the ping interval measured those.
		go func() {
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("bench: connect: %w", err)
	}
	res.ConnectSec = time.Since(start).Seconds()
	res.HandshakesPerSec = float64(o.Conns) / res.ConnectSec

	t := time.NewTimer(o.Hold)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return res, ctx.Err()
	}
	if o.ServerPID > 0 {
		res.ServerRSSHeld, _ = ProcRSS(o.ServerPID)
		res.RSSPerConn = float64(res.ServerRSSHeld-res.ServerRSSBefore) / float64(o.Conns)
	}
	if g, err := metricValue(ctx, hc, o.URL, stats, "go_goroutines"); err == nil {
		res.GoroutinesHeld = g
		res.GoroutinesPerConn = float64(g-res.GoroutinesBefore) / float64(o.Conns)
	}
	return res, nil
}

// metricValue reads one unlabelled metric from the relay's /metrics.
func metricValue(ctx context.Context, hc *http.Client, baseURL, tok, name string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("bench: metric %s not found", name)
}
