package playscript

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Sender sends one message of a script.
type Sender interface {
	Send(ctx context.Context, m *Message) error
}

// SenderFunc adapts a function to Sender.
type SenderFunc func(ctx context.Context, m *Message) error

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, m *Message) error { return f(ctx, m) }

// Clock makes the timers a Runner waits on. Tests inject a fake one.
type Clock interface {
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Runner uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// RealClock is the system clock.
type RealClock struct{}

// NewTimer starts a time.Timer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

// TimeoutError reports a wait that timed out.
type TimeoutError struct {
	Name    string // script name
	Line    int
	Wait    *Wait
	Matched int // messages that matched before the timeout
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s:%d: timed out after %s waiting for %d message(s) matching '%s': %d matched",
		e.Name, e.Line, e.Wait.Timeout, e.Wait.Count, e.Wait.Source, e.Matched)
}

// Runner plays a script. Create it with NewRunner before the connection's
// messages are read, hand it every received message with Received, and
// call Run once.
//
// Waits count the matching messages received after their starting point:
// the later of the moment the script last started sending a message and the
// moment the previous wait ended (when the message that completed its count
// arrived, or when it timed out); for the first wait with no message sent
// before it, the moment the Runner was created. A message counted by one
// wait is never counted by the next, and an answer that arrives during a
// delay between a message and the wait for it still counts.
type Runner struct {
	script *Script
	send   Sender

	// Clock makes the timers of delays and waits; nil means RealClock.
	Clock Clock
	// Strict makes Run stop with a *TimeoutError when a wait times out;
	// otherwise the wait's message is sent anyway.
	Strict bool
	// OnTimeout, if set, is called with each timeout that Run continues
	// after (Strict false).
	OnTimeout func(*TimeoutError)

	mu      sync.Mutex
	waits   []*Wait       // the script's waits, in order
	pos     int           // index in waits of the next wait Run reaches
	armed   int           // index in waits of the wait now counting (>= pos)
	n       int           // messages counted for waits[armed]
	changed chan struct{} // closed and replaced whenever armed advances
}

// NewRunner returns a Runner that plays s through send.
func NewRunner(s *Script, send Sender) *Runner {
	r := &Runner{script: s, send: send, changed: make(chan struct{})}
	for i := range s.Steps {
		if w := s.Steps[i].Wait; w != nil {
			r.waits = append(r.waits, w)
		}
	}
	return r
}

// Received counts a received message. It may be called from any goroutine,
// before, during and after Run, and does not keep data.
func (r *Runner) Received(data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.armed >= len(r.waits) {
		return
	}
	w := r.waits[r.armed]
	if !w.Pattern.Match(data) {
		return
	}
	r.n++
	if r.n >= w.Count {
		r.advanceLocked(r.armed + 1)
	}
}

func (r *Runner) advanceLocked(armed int) {
	r.armed, r.n = armed, 0
	close(r.changed)
	r.changed = make(chan struct{})
}

// mark starts the counts again: called as a message starts being sent.
func (r *Runner) mark() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armed, r.n = r.pos, 0
}

// Run plays the script: it returns nil at its end, the context's error when
// ctx ends, the first error of the Sender, or with Strict a *TimeoutError.
func (r *Runner) Run(ctx context.Context) error {
	for i := range r.script.Steps {
		st := &r.script.Steps[i]
		switch {
		case st.Wait != nil:
			if err := r.wait(ctx, st); err != nil {
				return err
			}
		case st.Delay > 0:
			if err := r.sleep(ctx, st.Delay); err != nil {
				return err
			}
		}
		if st.Send != nil {
			if err := ctx.Err(); err != nil {
				return err
			}
			r.mark()
			if err := r.send.Send(ctx, st.Send); err != nil {
				return fmt.Errorf("%s:%d: send: %w", r.script.Name, st.Line, err)
			}
		}
	}
	return nil
}

func (r *Runner) clock() Clock {
	if r.Clock == nil {
		return RealClock{}
	}
	return r.Clock
}

func (r *Runner) sleep(ctx context.Context, d time.Duration) error {
	t := r.clock().NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait blocks until the wait of st (waits[pos]) has counted its messages or
// timed out.
func (r *Runner) wait(ctx context.Context, st *Step) error {
	t := r.clock().NewTimer(st.Wait.Timeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		if r.armed > r.pos {
			r.pos++
			r.mu.Unlock()
			return nil
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C():
			r.mu.Lock()
			if r.armed > r.pos { // completed as the timer fired
				r.pos++
				r.mu.Unlock()
				return nil
			}
			e := &TimeoutError{Name: r.script.Name, Line: st.Line, Wait: st.Wait, Matched: r.n}
			r.pos++
			r.advanceLocked(r.pos)
			r.mu.Unlock()
			if r.Strict {
				return e
			}
			if r.OnTimeout != nil {
				r.OnTimeout(e)
			}
			return nil
		}
	}
}
