package access

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/ratelimit"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Default bounds on HTTP publish requests (POST wire.PublishPath), each a
// token bucket (internal/ratelimit) whose burst is twice its rate unless
// configured. A request carries one message or a batch of up to
// wire.MaxPublishBatch, so one token may publish up to 100 × 100 messages a
// second in batches. These come on top of the server's limit on all HTTP
// requests of an address (--max-requests-per-address).
const (
	DefaultPublishPerToken   = 100 // requests per second, sustained, of one token
	DefaultPublishPerAddress = 100 // requests per second, sustained, of one client address
)

// PublishLimits bound the HTTP publish requests of one token and of one
// client address (behind Config.TrustedProxies, the client that the
// proxies name). Limits are per node. Zero values mean the defaults.
type PublishLimits struct {
	// PerToken is the sustained rate of publish requests one token may
	// make (default DefaultPublishPerToken), TokenBurst how many it may
	// make at once (default twice PerToken).
	PerToken   float64
	TokenBurst int
	// PerAddress and AddressBurst are the same for one client address,
	// whatever the tokens (default DefaultPublishPerAddress, twice it).
	PerAddress   float64
	AddressBurst int
}

func (l PublishLimits) withDefaults() (PublishLimits, error) {
	for _, v := range []struct {
		name, flag string
		bad        bool
	}{
		{"publish requests per token", "--max-publish-per-token", l.PerToken < 0},
		{"publish burst per token", "--publish-burst-per-token", l.TokenBurst < 0},
		{"publish requests per address", "--max-publish-per-address", l.PerAddress < 0},
		{"publish burst per address", "--publish-burst-per-address", l.AddressBurst < 0},
	} {
		if v.bad {
			return l, fmt.Errorf("access: the limit on %s (%s) must not be negative; 0 means its default", v.name, v.flag)
		}
	}
	if l.PerToken == 0 {
		l.PerToken = DefaultPublishPerToken
	}
	if l.TokenBurst == 0 {
		l.TokenBurst = max(1, int(2*l.PerToken))
	}
	if l.PerAddress == 0 {
		l.PerAddress = DefaultPublishPerAddress
	}
	if l.AddressBurst == 0 {
		l.AddressBurst = max(1, int(2*l.PerAddress))
	}
	return l, nil
}

// publishLimiter holds the token buckets of HTTP publish.
type publishLimiter struct {
	byToken   *ratelimit.Limiter[string] // by Grant.Owner (a digest of the token)
	byAddress *ratelimit.Limiter[netip.Addr]
}

func newPublishLimiter(l PublishLimits, now func() time.Time) *publishLimiter {
	return &publishLimiter{
		byToken:   ratelimit.New[string](l.PerToken, l.TokenBurst, now),
		byAddress: ratelimit.New[netip.Addr](l.PerAddress, l.AddressBurst, now),
	}
}

// rateLimited is the 429 of a publish request over a limit, with the
// Retry-After it needs set on w.
func rateLimited(w http.ResponseWriter, wait time.Duration, who string) *apierr.Error {
	w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
	return apierr.New(http.StatusTooManyRequests, wire.ErrorRateLimited, "too many publish requests from this "+who+"; slow down, or send batches")
}

// MaxPublishPrefixLabels bounds the topic prefixes publish metrics tell
// apart: the first this many distinct first segments of published topics
// get a label of their own, every later one shares PublishOtherPrefix. So
// the metrics' series stay bounded whatever topics tokens may write.
const MaxPublishPrefixLabels = 100

// PublishOtherPrefix is the label of the topic prefixes past
// MaxPublishPrefixLabels. It cannot be a topic segment ("*" is not in the
// topic grammar).
const PublishOtherPrefix = "*"

// PublishStats are the counters of HTTP publish since the node started.
type PublishStats struct {
	// Requests counts publish requests by outcome: "ok", or the error
	// code of the refusal (a bounded set: pkg/wire's error codes).
	Requests map[string]uint64
	// Messages and Bytes (payload) published, by the first segment of the
	// topic ("lab" for "lab/camera/1") or PublishOtherPrefix.
	Messages, Bytes map[string]uint64
}

// publishCounters counts publish outcomes and published messages.
type publishCounters struct {
	mu       sync.Mutex
	requests map[string]uint64     // guarded by mu; by outcome
	byPrefix map[string]*[2]uint64 // guarded by mu; messages, bytes; at most MaxPublishPrefixLabels+1 keys
}

func (p *publishCounters) outcome(o string) {
	p.mu.Lock()
	if p.requests == nil {
		p.requests = map[string]uint64{}
	}
	p.requests[o]++
	p.mu.Unlock()
}

// published counts the messages of one request, which are all published.
func (p *publishCounters) published(msgs []publishMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byPrefix == nil {
		p.byPrefix = map[string]*[2]uint64{}
	}
	for _, m := range msgs {
		label, _, _ := strings.Cut(m.topic, "/")
		c := p.byPrefix[label]
		if c == nil {
			if len(p.byPrefix) >= MaxPublishPrefixLabels {
				label = PublishOtherPrefix
				c = p.byPrefix[label]
			}
			if c == nil {
				c = new([2]uint64)
				p.byPrefix[label] = c
			}
		}
		c[0]++
		c[1] += uint64(len(m.msg.Data))
	}
}

func (p *publishCounters) snapshot() PublishStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PublishStats{Requests: make(map[string]uint64, len(p.requests)),
		Messages: make(map[string]uint64, len(p.byPrefix)), Bytes: make(map[string]uint64, len(p.byPrefix))}
	for o, n := range p.requests {
		st.Requests[o] = n
	}
	for label, c := range p.byPrefix {
		st.Messages[label], st.Bytes[label] = c[0], c[1]
	}
	return st
}

// PublishStats returns the counters of HTTP publish (for metrics).
func (h *Handler) PublishStats() PublishStats { return h.publishCounts.snapshot() }
