package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Retries of refused requests. The relay answers 429 (rate_limited,
// too_many_codes) and 503 (overloaded, and a code store or node that did
// not answer) when it is short of something for a moment, most often in a
// reconnect storm, usually with Retry-After; a client that comes back at
// once, or never, makes the storm worse or fails for nothing. Access,
// DialOneStep and Dial wait and try again (every 429 and 503 but those of
// notRetried, and a proxy's without an error code), a bounded
// number of times (Options.Retries), each wait the server's Retry-After or a
// doubling backoff, capped (Options.RetryMaxDelay), plus up to a quarter
// more at random so that clients refused together do not all come back
// together, and never past ctx's deadline.
const (
	// DefaultRetries is Options.Retries' default: 4 attempts in all.
	DefaultRetries = 3
	// DefaultRetryMaxDelay is Options.RetryMaxDelay's default.
	DefaultRetryMaxDelay = 10 * time.Second
	// retryFirstDelay is the first backoff, for an answer without
	// Retry-After; each retry doubles it.
	retryFirstDelay = 250 * time.Millisecond
)

func (o *Options) retries() int {
	switch {
	case o == nil || o.Retries == 0:
		return DefaultRetries
	case o.Retries < 0:
		return 0
	}
	return o.Retries
}

func (o *Options) retryMaxDelay() time.Duration {
	if o == nil || o.RetryMaxDelay <= 0 {
		return DefaultRetryMaxDelay
	}
	return o.RetryMaxDelay
}

// notRetried are the 429 and 503 refusals that a wait of seconds does not
// cure, left to the caller: a shell topic whose host is not connected, and
// a token or subject holding the most connections it may (until one of
// them closes).
var notRetried = map[wire.ErrorCode]bool{wire.ErrorHostUnavailable: true, wire.ErrorTooManyConnections: true}

// retryable reports whether err is a refusal worth waiting out: a 429 or
// 503 whose code is not in notRetried.
func retryable(err error) (*AccessError, bool) {
	var ae *AccessError
	if errors.As(err, &ae) && (ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusServiceUnavailable) && !notRetried[ae.Code] {
		return ae, true
	}
	return nil, false
}

// retryDelay is the wait before retry number n (0 for the first) after a
// refusal whose Retry-After was retryAfter (0: none): retryAfter, or the
// backoff retryFirstDelay·2ⁿ, at most maxDelay, plus up to a quarter of it
// drawn from jitter (a number in [0, 1)).
func retryDelay(n int, retryAfter, maxDelay time.Duration, jitter float64) time.Duration {
	d := retryAfter
	if d <= 0 {
		d = retryFirstDelay << min(n, 20)
	}
	d = min(d, maxDelay)
	return d + time.Duration(jitter*float64(d/4))
}

// withRetries runs attempt until it succeeds, fails with something other
// than a 429 or 503 refusal, or has been retried opts.retries() times,
// waiting between attempts as retryDelay says. A wait that ctx would end
// first is not begun: the last refusal is returned, joined with ctx's
// error when ctx ended.
func withRetries[T any](ctx context.Context, opts *Options, attempt func() (T, error)) (T, error) {
	retries, maxDelay := opts.retries(), opts.retryMaxDelay()
	for n := 0; ; n++ {
		v, err := attempt()
		ae, again := retryable(err)
		if !again || n >= retries {
			return v, err
		}
		wait := retryDelay(n, ae.RetryAfter, maxDelay, rand.Float64())
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return v, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("client: waiting to retry: %w", errors.Join(ctx.Err(), err))
		}
	}
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP
// date (RFC 9110 §10.2.3); 0 when absent, malformed or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, 1<<20)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
