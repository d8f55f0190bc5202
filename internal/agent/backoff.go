package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the retry policy of relay links and local connections. Zero
// fields take the defaults.
type Backoff struct {
	// Min is the first retry delay (default 500 ms); each further failure
	// doubles it up to Max (default 30 s). Each actual delay is drawn
	// uniformly from [d/2, d] (jitter), so hosts restarted together do not
	// retry in step.
	Min, Max time.Duration
	// Stable is how long a connection must have lasted for the next
	// failure to start again from Min (default 30 s).
	Stable time.Duration
	// Long is the delay after the relay denied the link (close 4003, or a
	// refusal booking_denied / token_revoked) or superseded it (4009):
	// default 5 minutes, with the same jitter.
	Long time.Duration
}

// DefaultBackoff is the policy used when Options.Backoff is zero.
var DefaultBackoff = Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second, Stable: 30 * time.Second, Long: 5 * time.Minute}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = DefaultBackoff.Min
	}
	if b.Max < b.Min {
		b.Max = max(DefaultBackoff.Max, b.Min)
	}
	if b.Stable <= 0 {
		b.Stable = DefaultBackoff.Stable
	}
	if b.Long <= 0 {
		b.Long = DefaultBackoff.Long
	}
	return b
}

// backoff is the state of one retry loop; it is owned by that loop.
type backoff struct {
	p   Backoff
	cur time.Duration // the last bound; 0 before the first failure
}

// next returns the delay before the next attempt and doubles the bound.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.p.Min
	} else {
		b.cur = min(2*b.cur, b.p.Max)
	}
	return jitter(b.cur)
}

// reset starts again from Min.
func (b *backoff) reset() { b.cur = 0 }

// long returns the long delay, for denials.
func (b *backoff) long() time.Duration { return jitter(b.p.Long) }

// done records that a connection lasted up; a stable one resets the delay.
func (b *backoff) done(up time.Duration) {
	if up >= b.p.Stable {
		b.reset()
	}
}

// jitter draws uniformly from [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
