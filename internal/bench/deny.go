package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// DenyOptions configure Deny.
type DenyOptions struct {
	// URL is the relay's base URL (loopback only). Required.
	URL string
	// Secret signs the tokens the scenario needs (connections, admin and
	// stats tokens). Required.
	Secret []byte
	// Conns is the number of connections held (default 10,000).
	Conns int
	// Denied is how many of them carry the booking that is denied
	// (default 1,000).
	Denied int
	// Topics spreads the connections over this many topics (default 100).
	Topics int
	// StatusRuns is how many times /status is fetched with every
	// connection open (default 5).
	StatusRuns int
	// ConnectTimeout bounds opening every connection (default 2 min);
	// Timeout bounds the wait for the denied connections to close
	// (default 10 s).
	ConnectTimeout, Timeout time.Duration
}

// DenyResult is what Deny measured.
type DenyResult struct {
	Conns      int     `json:"conns"`
	Denied     int     `json:"denied"`
	ConnectSec float64 `json:"connect_sec"`
	// DenyResponseMS is the round trip of POST /bids/deny.
	DenyResponseMS float64 `json:"deny_response_ms"`
	// DisconnectMS are quantiles, over the denied connections, of the time
	// from sending POST /bids/deny to the client seeing the 4003 close.
	DisconnectMS LatencyMS `json:"disconnect_ms"`
	Closed4003   int       `json:"closed_4003"`
	// NotClosed counts denied connections not closed within Timeout;
	// WronglyClosed other connections that closed meanwhile. Both must be 0.
	NotClosed     int `json:"not_closed"`
	WronglyClosed int `json:"wrongly_closed"`
	// StatusMS are quantiles of GET /status with every connection open.
	StatusMS    LatencyMS `json:"status_ms"`
	StatusBytes int       `json:"status_bytes"`
}

// LatencyMS are latency quantiles in milliseconds.
type LatencyMS struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func latencyMS(h *Histogram) LatencyMS {
	ms := func(ns float64) float64 { return ns / 1e6 }
	return LatencyMS{P50: ms(h.Quantile(.5)), P90: ms(h.Quantile(.9)), P99: ms(h.Quantile(.99)), Max: ms(float64(h.Max()))}
}

// deniedBooking is the booking id the scenario denies.
const deniedBooking = "bench-deny-target"

// Deny measures the control plane under load: it opens Conns connections,
// Denied of them with one booking id, times GET /status, denies the booking
// and times how long each of its connections takes to see the 4003 close,
// checking that no other connection closes.
func Deny(ctx context.Context, o DenyOptions) (DenyResult, error) {
	o.setDefaults()
	res := DenyResult{Conns: o.Conns, Denied: o.Denied}
	switch {
	case o.Denied > o.Conns || o.Denied < 1:
		return res, fmt.Errorf("bench: denied %d: want 1 to conns (%d)", o.Denied, o.Conns)
	case len(o.Secret) == 0:
		return res, errors.New("bench: the relay's secret is needed to mint admin and connection tokens")
	}
	if err := CheckLoopbackURL(o.URL); err != nil {
		return res, err
	}
	ttl := o.ConnectTimeout + o.Timeout + time.Hour
	mint := func(topic, booking string, scopes ...string) (string, error) {
		return mintToken(o.Secret, o.URL, ttl, func(c *auth.Claims) {
			c.Topic, c.BookingID, c.Scopes = topic, booking, scopes
			if topic != "" {
				c.Prefix = client.DefaultPrefix
			}
		})
	}
	admin, err := mint("", "", auth.ScopeAdmin)
	if err != nil {
		return res, err
	}
	stats, err := mint("", "", auth.ScopeStats)
	if err != nil {
		return res, err
	}
	deniedTok, err := mint("bench/deny/*", deniedBooking, auth.ScopeRead)
	if err != nil {
		return res, err
	}
	keepTok, err := mint("bench/deny/*", "bench-keep", auth.ScopeRead)
	if err != nil {
		return res, err
	}

	// Connect, a few at a time, over a pool of keep-alive connections for
	// the access requests.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}
	defer hc.CloseIdleConnections()
	copts := &client.Options{HTTPClient: hc, Retries: noClientRetries}
	cctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	conns := make([]*client.Conn, o.Conns)
	start := time.Now()
	err = parallel(cctx, o.Conns, 32, func(i int) error {
		tok := keepTok
		if i < o.Denied {
			tok = deniedTok
		}
		c, err := client.Dial(cctx, o.URL, fmt.Sprintf("bench/deny/t%d", i%o.Topics), tok, copts)
		conns[i] = c
		return err
	})
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	if err != nil {
		return res, fmt.Errorf("bench: connect: %w", err)
	}
	res.ConnectSec = time.Since(start).Seconds()

	// Each connection's reader notes when and how it closed.
	cw := watchCloses(conns, nil)
	closedAt, closeCode := cw.at, cw.code

	// /status with every connection open.
	var sh Histogram
	for range o.StatusRuns {
		t0 := time.Now()
		n, err := httpDo(ctx, hc, http.MethodGet, o.URL+"/status", stats, http.StatusOK)
		if err != nil {
			return res, err
		}
		sh.Record(time.Since(t0).Nanoseconds())
		res.StatusBytes = n
	}
	res.StatusMS = latencyMS(&sh)

	// Deny, and wait for the denied connections to close.
	t0 := time.Now()
	if _, err := httpDo(ctx, hc, http.MethodPost, fmt.Sprintf("%s/bids/deny?bid=%s&exp=%d", o.URL, deniedBooking, time.Now().Add(time.Hour).Unix()), admin, http.StatusNoContent); err != nil {
		return res, err
	}
	res.DenyResponseMS = float64(time.Since(t0).Nanoseconds()) / 1e6
	deadline := time.Now().Add(o.Timeout)
	for time.Now().Before(deadline) {
		n := 0
		for i := range o.Denied {
			if closedAt[i].Load() != 0 {
				n++
			}
		}
		if n == o.Denied {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	var dh Histogram
	for i := range o.Conns {
		at := closedAt[i].Load()
		switch {
		case i < o.Denied && at == 0:
			res.NotClosed++
		case i < o.Denied:
			dh.Record(at - t0.UnixNano())
			if wire.CloseCode(closeCode[i].Load()) == wire.CloseDenied {
				res.Closed4003++
			}
		case at != 0:
			res.WronglyClosed++
		}
	}
	res.DisconnectMS = latencyMS(&dh)
	for _, c := range conns {
		c.CloseNow()
	}
	cw.wg.Wait()
	return res, nil
}

// closeWatch is what watchCloses records: per connection, when it closed
// (Unix nanoseconds; 0 while open) and the close code it got (0: none).
type closeWatch struct {
	at   []atomic.Int64
	code []atomic.Int32
	wg   sync.WaitGroup // the readers; they end once their connections close
}

// watchCloses reads each connection until it closes, as an idle client
// does, and records when and how; onClose, if set, is called with the
// connection's index once that is recorded.
func watchCloses(conns []*client.Conn, onClose func(i int)) *closeWatch {
	cw := &closeWatch{at: make([]atomic.Int64, len(conns)), code: make([]atomic.Int32, len(conns))}
	for i, c := range conns {
		cw.wg.Add(1)
		go func() {
			defer cw.wg.Done()
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					cw.at[i].Store(time.Now().UnixNano())
					var ce *client.CloseError
					if errors.As(err, &ce) {
						cw.code[i].Store(int32(ce.Code))
					}
					if onClose != nil {
						onClose(i)
					}
					return
				}
			}
		}()
	}
	return cw
}

// parallel runs f(0..n-1) with at most width at once, stopping at the first
// error.
func parallel(ctx context.Context, n, width int, f func(i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				once.Do(func() { first = fmt.Errorf("%d: %w", i, err); cancel() })
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// httpDo sends a request with a bearer token, expects status, and returns
// the response size.
func httpDo(ctx context.Context, hc *http.Client, method, url, tok string, status int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: %s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		return 0, fmt.Errorf("bench: %s %s: HTTP %d: %s", method, req.URL.Path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return len(b), nil
}

// mintToken signs an HS256 token for the relay at baseURL with claims set
// by fill.
func mintToken(secret []byte, baseURL string, ttl time.Duration, fill func(*auth.Claims)) (string, error) {
	key, err := auth.NewHMACKey("HS256", secret)
	if err != nil {
		return "", err
	}
	c := auth.NewClaims(strings.TrimSuffix(baseURL, "/"), time.Now(), ttl)
	c.Subject = "switchboard-bench"
	fill(&c)
	return key.Sign(c)
}

// setDefaults fills in the documented defaults of the fields left zero.
func (o *DenyOptions) setDefaults() {
	if o.Conns == 0 {
		o.Conns = 10_000
	}
	if o.Denied == 0 {
		o.Denied = 1_000
	}
	if o.Topics <= 0 {
		o.Topics = 100
	}
	if o.StatusRuns <= 0 {
		o.StatusRuns = 5
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 2 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
}
