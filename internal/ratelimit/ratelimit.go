// Package ratelimit is a token bucket per key: per client address for the
// server's request limit, per token and per address for HTTP publish. A
// key's bucket holds up to burst tokens and refills at rate tokens per
// second; a request takes one, and is refused with the wait until the next
// one while the bucket is empty.
//
// Memory is bounded whatever the number of keys: a bucket that has refilled
// completely carries no information and is swept, so the map holds only
// keys active within the last refill period, and never more than MaxKeys
// (past it, keys without a bucket are let through: a flood from more keys
// than that within one refill period is bounded by other limits, such as
// the server's descriptor budget).
//
// Locking: one mutex per Limiter, never held across I/O.
package ratelimit

import (
	"strconv"
	"sync"
	"time"
)

// MaxKeys bounds the buckets one Limiter holds.
const MaxKeys = 100_000

// Limiter is a token bucket per key K.
type Limiter[K comparable] struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[K]*bucket // guarded by mu
	lastSweep time.Time     // guarded by mu
}

type bucket struct {
	tokens float64
	at     time.Time
}

// New returns a Limiter that lets each key make rate requests per second,
// sustained, and burst at once. rate and burst must be positive. now is
// the clock (nil: time.Now).
func New[K comparable](rate float64, burst int, now func() time.Time) *Limiter[K] {
	if now == nil {
		now = time.Now
	}
	return &Limiter[K]{rate: rate, burst: float64(max(1, burst)), now: now, buckets: map[K]*bucket{}}
}

// Allow takes a token for key, or reports how long until one is there.
func (l *Limiter[K]) Allow(key K) (ok bool, wait time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	fill := time.Duration(l.burst / l.rate * float64(time.Second))
	if len(l.buckets) >= MaxKeys || now.Sub(l.lastSweep) > fill {
		for k, b := range l.buckets {
			if now.Sub(b.at) >= fill {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= MaxKeys {
			return true, 0
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// RetryAfter is the value of a Retry-After header for a wait Allow
// reported: whole seconds, rounded up, at least 1.
func RetryAfter(wait time.Duration) string {
	return strconv.Itoa(max(1, int(wait.Seconds()+0.999)))
}
