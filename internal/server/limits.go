package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/jobs/uwsapi"
	"github.com/switchboard-hub/switchboard/internal/ratelimit"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Limits bound what one client may take of a node, and keep the node able
// to answer its health checks when clients want more than it has. Zero
// values mean the documented defaults; negative values are errors.
type Limits struct {
	// ConnsPerToken and ConnsPerSubject bound the relay connections one
	// token and one subject hold open at once (defaults
	// access.DefaultMaxConnsPerToken and access.DefaultMaxConnsPerSubject).
	ConnsPerToken, ConnsPerSubject int
	// RequestsPerSecond is the sustained rate of HTTP requests one client
	// address may make (default 200); RequestBurst how many it may make at
	// once (default twice the rate). Behind a proxy, name it with
	// TrustedProxies, or every client shares the proxy's address.
	RequestsPerSecond float64
	RequestBurst      int
	// Publish bounds HTTP publish requests per token and per client
	// address (defaults access.DefaultPublishPerToken and
	// access.DefaultPublishPerAddress, bursts twice the rates).
	Publish access.PublishLimits
	// FDReserve is how many file descriptors are kept for health checks,
	// the store, logs and outgoing connections: once open connections
	// reach the process's descriptor limit less this reserve, new
	// connections are refused with 503 (default 5 % of the limit, at
	// least 64).
	FDReserve int
}

// Defaults for Limits.
const (
	DefaultRequestsPerSecond = 200
	minFDReserve             = 64
)

func (l Limits) withDefaults() (Limits, error) {
	for _, v := range []struct {
		name, flag string
		bad        bool
	}{
		{"connections per token", "--max-conns-per-token", l.ConnsPerToken < 0},
		{"connections per subject", "--max-conns-per-subject", l.ConnsPerSubject < 0},
		{"requests per second per address", "--max-requests-per-address", l.RequestsPerSecond < 0},
		{"request burst", "--request-burst", l.RequestBurst < 0},
		{"descriptor reserve", "--fd-reserve", l.FDReserve < 0},
	} {
		if v.bad {
			return l, errors.New("server: the limit on " + v.name + " (" + v.flag + ") must not be negative; 0 means its default")
		}
	}
	if l.RequestsPerSecond == 0 {
		l.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if l.RequestBurst == 0 {
		l.RequestBurst = max(1, int(2*l.RequestsPerSecond))
	}
	return l, nil
}

// fdBudget is how many connections may be open at once: the descriptor
// limit less the reserve, or 0 (no bound) if the limit cannot be read.
// keepAliveShedPercent is the share of the descriptor budget past which
// answers close their connections instead of keeping them alive.
const keepAliveShedPercent = 75

func fdBudget(reserve int) int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<40 /* unlimited */ {
		return 0
	}
	if reserve == 0 {
		reserve = max(minFDReserve, int(rl.Cur/20))
	}
	return max(1, int64(rl.Cur)-int64(reserve))
}

// refusals counts requests the server refused before any handler, by
// reason, for metrics.
type refusals struct {
	rate, overload atomic.Uint64
}

// Refusal reasons (the metric's label values).
const (
	refusedRate     = string(wire.ErrorRateLimited) // 429: the client address is over its request rate
	refusedOverload = string(wire.ErrorOverloaded)  // 503: too few descriptors left
)

func (r *refusals) snapshot() map[string]uint64 {
	return map[string]uint64{refusedRate: r.rate.Load(), refusedOverload: r.overload.Load()}
}

// refusalCounts returns the metrics' view of refused requests: the
// server's own, and the jobs API's WAITs over a subject's limit (api may
// be nil: no jobs API on this node).
func refusalCounts(r *refusals, api *uwsapi.API) func() map[string]uint64 {
	return func() map[string]uint64 {
		m := r.snapshot()
		if api != nil {
			m["too_many_waits"] = api.WaitsRefused()
		}
		return m
	}
}

// exemptFromLimits reports whether a request must be answered whatever the
// load: the health checks a load balancer and an orchestrator rely on.
func exemptFromLimits(r *http.Request) bool {
	return r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
}

// limitRequests refuses requests from an address over its rate (429) and
// new work when open connections have used up the descriptor budget (503),
// both as JSON errors with Retry-After.
func limitRequests(l *ratelimit.Limiter[netip.Addr], open *atomic.Int64, budget int64, trusted []netip.Prefix, counts *refusals, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exemptFromLimits(r) {
			next.ServeHTTP(w, r)
			return
		}
		if budget > 0 && open.Load() > budget {
			counts.overload.Add(1)
			w.Header().Set("Retry-After", "5")
			w.Header().Set("Connection", "close")
			apierr.WriteNew(w, http.StatusServiceUnavailable, wire.ErrorOverloaded, "this node has no room for more connections now; retry shortly or elsewhere")
			return
		}
		if budget > 0 && open.Load() > budget*keepAliveShedPercent/100 && r.Header.Get("Upgrade") == "" {
			// Short of descriptors: this answer ends its connection, so that
			// clients do not hold idle keep-alive connections (a two-step
			// client's access request's, beside its websocket) that a
			// websocket may need.
			w.Header().Set("Connection", "close")
		}
		if addr, ok := clientIP(r, trusted); ok {
			if ok, wait := l.Allow(addr); !ok {
				counts.rate.Add(1)
				w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
				apierr.WriteNew(w, http.StatusTooManyRequests, wire.ErrorRateLimited, "too many requests from this address; slow down")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// acceptErrorLog logs failed accepts at warn, at most once per interval with
// the count of those not logged: running out of descriptors must be seen,
// without a log line per retry.
type acceptErrorLog struct {
	log      *slog.Logger
	interval time.Duration

	mu         sync.Mutex
	last       time.Time // guarded by mu
	suppressed int       // guarded by mu
}

func (a *acceptErrorLog) report(err error) {
	if errors.Is(err, net.ErrClosed) {
		return // the listener closed: shutdown
	}
	a.mu.Lock()
	now := time.Now()
	if now.Sub(a.last) < a.interval {
		a.suppressed++
		a.mu.Unlock()
		return
	}
	n := a.suppressed
	a.last, a.suppressed = now, 0
	a.mu.Unlock()
	a.log.Warn("accept failed; new connections are waiting", "err", err, "not_logged_since_last", n)
}

// clientIP is the address of the client (behind trusted proxies, the first
// untrusted one they name).
func clientIP(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	return access.ClientIP(r, trusted)
}
