package playscript

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose time moves only with Advance. Every timer it
// makes is reported on created, so a test knows when the runner blocks.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Duration
	timers  []*fakeTimer
	created chan time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{created: make(chan time.Duration, 100)} }

type fakeTimer struct {
	clk  *fakeClock
	at   time.Duration
	c    chan time.Time
	done bool
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	t := &fakeTimer{clk: c, at: c.now + d, c: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	c.created <- d
	return t
}

func (c *fakeClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the time on and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now += d
	for _, t := range c.timers {
		if !t.done && t.at <= c.now {
			t.done = true
			t.c <- time.Unix(0, 0).Add(t.at)
		}
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

// sent is a message the recording sender saw, with the fake time.
type sent struct {
	at   time.Duration
	text string
	bin  bool
}

type harness struct {
	t     *testing.T
	clk   *fakeClock
	r     *Runner
	sends chan sent
	done  chan error
	mu    sync.Mutex
	tos   []*TimeoutError
}

func start(t *testing.T, script string, strict bool) *harness {
	t.Helper()
	s, err := Parse(strings.NewReader(script), "t.play")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, clk: newFakeClock(), sends: make(chan sent, 100), done: make(chan error, 1)}
	h.r = NewRunner(s, SenderFunc(func(ctx context.Context, m *Message) error {
		h.sends <- sent{at: h.clk.Now(), text: string(m.Data), bin: m.Binary()}
		return nil
	}))
	h.r.Clock, h.r.Strict = h.clk, strict
	h.r.OnTimeout = func(e *TimeoutError) {
		h.mu.Lock()
		h.tos = append(h.tos, e)
		h.mu.Unlock()
	}
	return h
}

func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	go func() { h.done <- h.r.Run(ctx) }()
}

// expectTimer waits for the runner to start a timer of duration d.
func (h *harness) expectTimer(d time.Duration) {
	h.t.Helper()
	var got time.Duration
	select {
	case got = <-h.clk.created:
	case err := <-h.done:
		h.done <- err // the timer may have been started just before the end
		select {
		case got = <-h.clk.created:
		default:
			h.t.Fatalf("runner ended (%v) instead of starting a %v timer", err, d)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatalf("no %v timer started", d)
	}
	if got != d {
		h.t.Fatalf("timer of %v, want %v", got, d)
	}
}

// expectSend waits for the next message and checks it and its fake time.
func (h *harness) expectSend(text string, at time.Duration) {
	h.t.Helper()
	var s sent
	select {
	case s = <-h.sends:
	case err := <-h.done:
		h.done <- err // the message may have been sent just before the end
		select {
		case s = <-h.sends:
		default:
			h.t.Fatalf("runner ended (%v) before sending %q", err, text)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatalf("%q not sent", text)
	}
	if s.text != text || s.at != at {
		h.t.Fatalf("sent %q at %v, want %q at %v", s.text, s.at, text, at)
	}
}

// expectNoSend checks that nothing was sent. Call it only while the runner
// is blocked on a timer or a count it cannot have reached.
func (h *harness) expectNoSend() {
	h.t.Helper()
	select {
	case s := <-h.sends:
		h.t.Fatalf("unexpected send %q at %v", s.text, s.at)
	default:
	}
}

func (h *harness) expectEnd(want error) {
	h.t.Helper()
	select {
	case err := <-h.done:
		if !errors.Is(err, want) {
			h.t.Fatalf("Run = %v, want %v", err, want)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not end")
	}
	h.expectNoSend()
}

// counted returns what the runner has counted for the armed wait.
func (h *harness) counted() (armed, n int) {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	return h.r.armed, h.r.n
}

func TestRunDelays(t *testing.T) {
	h := start(t, "first\n[1s] a\n[500ms]\nb\n[2s] %hex 00\n[0s] c\n", false)
	h.run()
	h.expectSend("first", 0)
	h.expectTimer(time.Second)
	h.clk.Advance(999 * time.Millisecond)
	h.expectNoSend()
	h.clk.Advance(time.Millisecond)
	h.expectSend("a", time.Second)
	h.expectTimer(500 * time.Millisecond)
	h.clk.Advance(500 * time.Millisecond)
	h.expectSend("b", 1500*time.Millisecond)
	h.expectTimer(2 * time.Second)
	h.clk.Advance(2 * time.Second)
	h.expectSend("\x00", 3500*time.Millisecond)
	h.expectSend("c", 3500*time.Millisecond) // [0s] starts no timer
	h.expectEnd(nil)
	select {
	case d := <-h.clk.created:
		t.Fatalf("extra timer %v", d)
	default:
	}
}

func TestRunRealClockDelay(t *testing.T) {
	s, _ := Parse(strings.NewReader("[50ms] x"), "t")
	var at time.Time
	r := NewRunner(s, SenderFunc(func(ctx context.Context, m *Message) error { at = time.Now(); return nil }))
	begin := time.Now()
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := at.Sub(begin); d < 50*time.Millisecond || d > 5*time.Second {
		t.Fatalf("sent after %v, want 50ms", d)
	}
}

func TestRunWaitCounts(t *testing.T) {
	h := start(t, "ping\n<'^pong',2,10s> next\n", false)
	h.run()
	h.expectSend("ping", 0)
	h.expectTimer(10 * time.Second)
	h.r.Received([]byte("pong 1"))
	h.r.Received([]byte("not a pong"))
	h.r.Received([]byte("xpong"))
	if armed, n := h.counted(); armed != 0 || n != 1 {
		t.Fatalf("armed %d, counted %d; want 0, 1", armed, n)
	}
	h.expectNoSend()
	h.r.Received([]byte("pong 2"))
	h.expectSend("next", 0)
	h.expectEnd(nil)
	if len(h.tos) != 0 {
		t.Fatalf("timeouts: %v", h.tos)
	}
}

func TestRunWaitBinaryMatchesRawBytes(t *testing.T) {
	h := start(t, `<'^\x02\x10',1,1s> %hex ff`, false)
	h.run()
	h.expectTimer(time.Second)
	h.r.Received([]byte("AhA=")) // base64 of the same bytes: no match
	h.r.Received([]byte{0x02, 0x10, 0xff})
	h.expectSend("\xff", 0)
	h.expectEnd(nil)
}

// Messages received before the last message was sent do not count.
func TestRunCountStartsAtSend(t *testing.T) {
	h := start(t, "ping\n<'pong',1,5s> done\n", false)
	h.r.Received([]byte("pong (stale, before the ping)"))
	h.run()
	h.expectSend("ping", 0)
	h.expectTimer(5 * time.Second)
	if armed, n := h.counted(); armed != 0 || n != 0 {
		t.Fatalf("armed %d, counted %d after the send; want 0, 0", armed, n)
	}
	h.r.Received([]byte("pong"))
	h.expectSend("done", 0)
	h.expectEnd(nil)
}

// Before any message is sent, counting starts when the runner is made.
func TestRunCountStartsAtCreation(t *testing.T) {
	h := start(t, "<'hello',1,5s> hi\n", false)
	h.r.Received([]byte("hello"))
	h.run()
	h.expectTimer(5 * time.Second)
	h.expectSend("hi", 0)
	h.expectEnd(nil)
}

// An answer arriving during a delay between the message and its wait counts.
func TestRunAnswerDuringDelayCounts(t *testing.T) {
	h := start(t, "ping\n[1s]\n<'pong',1,5s> done\n", false)
	h.run()
	h.expectSend("ping", 0)
	h.expectTimer(time.Second)
	h.r.Received([]byte("pong"))
	h.clk.Advance(time.Second)
	h.expectTimer(5 * time.Second)
	h.expectSend("done", time.Second)
	h.expectEnd(nil)
}

// A message sent between an early answer and the wait starts the count
// again.
func TestRunSendResetsEarlyCount(t *testing.T) {
	h := start(t, "hello\n[2s] again\n<'x',1,5s> end\n", false)
	h.run()
	h.expectSend("hello", 0)
	h.expectTimer(2 * time.Second)
	h.r.Received([]byte("x")) // answers hello, but "again" comes before the wait
	h.clk.Advance(2 * time.Second)
	h.expectSend("again", 2*time.Second)
	h.expectTimer(5 * time.Second)
	if armed, n := h.counted(); armed != 0 || n != 0 {
		t.Fatalf("armed %d, counted %d; want 0, 0", armed, n)
	}
	h.expectNoSend()
	h.r.Received([]byte("x"))
	h.expectSend("end", 2*time.Second)
	h.expectEnd(nil)
}

// Two answers in quick succession satisfy two consecutive waits; one
// message never satisfies both.
func TestRunConsecutiveWaits(t *testing.T) {
	h := start(t, "go\n<'ack',1,5s>\n<'done',1,5s> end\n<'x',1,5s>\n<'x',1,5s> last\n", false)
	h.run()
	h.expectSend("go", 0)
	h.expectTimer(5 * time.Second)
	h.r.Received([]byte("ack"))
	h.r.Received([]byte("done")) // may arrive before the runner wakes up
	h.expectTimer(5 * time.Second)
	h.expectSend("end", 0)
	h.expectTimer(5 * time.Second)
	h.r.Received([]byte("x"))
	h.expectTimer(5 * time.Second)
	if armed, n := h.counted(); armed != 3 || n != 0 {
		t.Fatalf("armed %d, counted %d; want the last wait with 0", armed, n)
	}
	h.expectNoSend()
	h.r.Received([]byte("x"))
	h.expectSend("last", 0)
	h.expectEnd(nil)
}

func TestRunTimeoutSendsAnyway(t *testing.T) {
	h := start(t, "ping\n<'pong',2,5s> next\n<'more',1,1s>\n", false)
	h.run()
	h.expectSend("ping", 0)
	h.expectTimer(5 * time.Second)
	h.r.Received([]byte("pong"))
	h.clk.Advance(4 * time.Second)
	h.expectNoSend()
	h.clk.Advance(time.Second)
	h.expectSend("next", 5*time.Second)
	h.expectTimer(time.Second)
	h.r.Received([]byte("more"))
	h.expectEnd(nil)
	if len(h.tos) != 1 {
		t.Fatalf("timeouts reported: %v", h.tos)
	}
	e := h.tos[0]
	if e.Line != 2 || e.Matched != 1 || e.Wait.Count != 2 ||
		e.Error() != "t.play:2: timed out after 5s waiting for 2 message(s) matching 'pong': 1 matched" {
		t.Fatalf("timeout %+v: %v", e, e)
	}
}

// After a timeout the next wait counts from the timeout.
func TestRunTimeoutMovesStart(t *testing.T) {
	h := start(t, "<'a',1,1s>\n<'b',1,1s> end\n", false)
	h.run()
	h.expectTimer(time.Second)
	h.r.Received([]byte("b")) // before the first wait timed out: not counted for the second
	h.clk.Advance(time.Second)
	h.expectTimer(time.Second)
	if armed, n := h.counted(); armed != 1 || n != 0 {
		t.Fatalf("armed %d, counted %d; want 1, 0", armed, n)
	}
	h.r.Received([]byte("b"))
	h.expectSend("end", time.Second)
	h.expectEnd(nil)
}

func TestRunStrictTimeout(t *testing.T) {
	h := start(t, "ping\n<'pong',1,5s> next\n", true)
	h.run()
	h.expectSend("ping", 0)
	h.expectTimer(5 * time.Second)
	h.clk.Advance(5 * time.Second)
	var te *TimeoutError
	select {
	case err := <-h.done:
		if !errors.As(err, &te) || te.Line != 2 || te.Matched != 0 {
			t.Fatalf("Run = %v, want a timeout on line 2", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end")
	}
	h.expectNoSend()
}

func TestRunCancel(t *testing.T) {
	for _, script := range []string{"[1h] never", "<'x',1,1h> never"} {
		h := start(t, script, false)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { h.done <- h.r.Run(ctx) }()
		h.expectTimer(time.Hour)
		cancel()
		h.expectEnd(context.Canceled)
	}
}

func TestRunSendError(t *testing.T) {
	s, _ := Parse(strings.NewReader("# c\na\nb\n"), "t.play")
	boom := errors.New("boom")
	n := 0
	r := NewRunner(s, SenderFunc(func(ctx context.Context, m *Message) error {
		if n++; n == 2 {
			return boom
		}
		return nil
	}))
	err := r.Run(context.Background())
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "t.play:3: send:") {
		t.Fatalf("Run = %v", err)
	}
}

// Many waits in a row, with messages fed concurrently from another
// goroutine: each message satisfies exactly one wait, whatever the
// interleaving (run with -race).
func TestRunConcurrentReceive(t *testing.T) {
	const n = 200
	s, _ := Parse(strings.NewReader(strings.Repeat("<'^m',1,10s>\n", n)+"end\n"), "t")
	var got []string
	r := NewRunner(s, SenderFunc(func(ctx context.Context, m *Message) error {
		got = append(got, string(m.Data))
		return nil
	}))
	r.OnTimeout = func(e *TimeoutError) { t.Errorf("timeout: %v", e) }
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			r.Received(fmt.Appendf(nil, "m%d", i))
			r.Received([]byte("noise"))
		}
	})
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(got) != 1 || got[0] != "end" {
		t.Fatalf("sent %q", got)
	}
	r.Received([]byte("m after the end")) // no wait left: ignored
}
