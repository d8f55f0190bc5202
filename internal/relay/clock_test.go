package relay

// What the relay does over time (token expiry, pings and their timeout, the
// write loop's linger) is tested in testing/synctest bubbles: the relay's
// timers run on the bubble's fake clock, so each test checks the moment
// something happens, to the nanosecond, instead of sleeping through it.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// pingConn is a memConn that records when it is pinged; its peer answers
// every ping (answer) or none, so that each ping ends at its deadline.
type pingConn struct {
	*memConn
	answer bool

	mu    sync.Mutex
	pings []time.Time // when each ping was sent; guarded by mu
}

func (p *pingConn) Ping(deadline time.Time) error {
	p.mu.Lock()
	p.pings = append(p.pings, time.Now())
	p.mu.Unlock()
	if p.answer {
		return nil
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-t.C:
		return errors.New("pingconn: no pong")
	case <-p.closed:
		return errAborted
	}
}

func (p *pingConn) sent() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.pings...)
}

// isClosed reports whether the relay has closed (or aborted) m.
func isClosed(m *memConn) bool {
	select {
	case <-m.closed:
		return true
	default:
		return false
	}
}

// acceptIdle runs srv.Accept(c) on its own goroutine and returns once the
// connection is registered and idle (every goroutine of the bubble is
// blocked), with the reason Accept will return on.
func acceptIdle(srv *Server, c Conn, info Info) <-chan CloseReason {
	done := make(chan CloseReason, 1)
	go func() { done <- srv.Accept(context.Background(), c, info) }()
	synctest.Wait()
	return done
}

// TestTokenExpiry: a connection is closed with 4001 (token_expired) at
// the moment its token expires, and not a nanosecond before.
func TestTokenExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{PingInterval: -1})
		expires := time.Now().Add(time.Hour)
		m := h.connect(Info{Topic: "t", CanRead: true, ExpiresAt: expires})
		time.Sleep(time.Until(expires) - time.Nanosecond)
		synctest.Wait()
		if isClosed(m) {
			t.Fatalf("closed with %d before the token expired", m.closeCode())
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait() // the close and Accept's return need no time to pass
		if !isClosed(m) || m.closeCode() != CloseTokenExpired {
			t.Fatalf("at expiry: closed %v with %d, want %d", isClosed(m), m.closeCode(), CloseTokenExpired)
		}
		if r, ok := h.reason(m); !ok || r != ReasonTokenExpired {
			t.Fatalf("accept returned %v (%v), want %v", r, ok, ReasonTokenExpired)
		}
	})
}

// TestPingsEveryInterval: a peer that answers is pinged every
// PingInterval, exactly, and stays connected.
func TestPingsEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 30 * time.Second
		srv, err := NewServer(Config{PingInterval: interval, PongTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		p := &pingConn{memConn: newMemConn(), answer: true}
		start := time.Now()
		done := acceptIdle(srv, p, Info{Topic: "t", CanRead: true})
		time.Sleep(3*interval + time.Second)
		synctest.Wait()
		pings := p.sent()
		if len(pings) != 3 {
			t.Fatalf("%d pings in %v, want 3", len(pings), 3*interval+time.Second)
		}
		for i, at := range pings {
			if want := start.Add(time.Duration(i+1) * interval); !at.Equal(want) {
				t.Errorf("ping %d at +%v, want +%v", i+1, at.Sub(start), want.Sub(start))
			}
		}
		if isClosed(p.memConn) {
			t.Fatal("a peer that answers pings was closed")
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if why := <-done; why != ReasonShutdown {
			t.Fatalf("closed for %v, want %v", why, ReasonShutdown)
		}
	})
}

// TestPingTimeout: a peer that does not answer is closed for ping_timeout
// PongTimeout after the first ping, and the ping timer stops with it.
func TestPingTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval, pongTimeout = 30 * time.Second, 10 * time.Second
		srv, err := NewServer(Config{PingInterval: interval, PongTimeout: pongTimeout})
		if err != nil {
			t.Fatal(err)
		}
		p := &pingConn{memConn: newMemConn()}
		start := time.Now()
		why := <-acceptIdle(srv, p, Info{Topic: "t", CanRead: true})
		if why != ReasonPingTimeout {
			t.Fatalf("closed for %v, want %v", why, ReasonPingTimeout)
		}
		if el := time.Since(start); el != interval+pongTimeout {
			t.Errorf("closed at +%v, want +%v (one interval, then the pong timeout)", el, interval+pongTimeout)
		}
		time.Sleep(10 * interval)
		if n := len(p.sent()); n != 1 {
			t.Errorf("%d pings, want 1: the timer outlived the connection", n)
		}
		if st := srv.Stats(); st.Connections != 0 || st.Closes[ReasonPingTimeout.String()] != 1 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestWriterLingers: a connection's write loop stays writerLinger after
// its last write (so a steady stream does not start a goroutine per
// message), then exits (so an idle connection holds no writer); the next
// message starts a new one.
func TestWriterLingers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{PingInterval: -1})
		w, r := h.connect(Info{Topic: "t", CanWrite: true}), h.connect(Info{Topic: "t", CanRead: true})
		c := h.connOf(r)
		writing := func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.writing
		}
		deliver := func(msg string) {
			t.Helper()
			w.send(t, Text, msg)
			if got := r.recv(t); string(got.Data) != msg {
				t.Fatalf("got %q, want %q", got.Data, msg)
			}
			synctest.Wait() // the write loop is back waiting, its linger started now
		}
		deliver("one")
		if !writing() {
			t.Fatal("no write loop right after a write")
		}
		time.Sleep(writerLinger / 2)
		deliver("two") // within the linger: the same loop writes it and lingers again
		time.Sleep(writerLinger - time.Nanosecond)
		synctest.Wait()
		if !writing() {
			t.Fatal("the write loop left before it had been idle for writerLinger")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if writing() {
			t.Fatal("the write loop still runs after writerLinger idle")
		}
		deliver("three")
		if !writing() {
			t.Fatal("no write loop for a message after the linger")
		}
	})
}

// TestSlowConsumerClosePolicy: with PolicyClose, a reader whose queue
// overflows is closed for slow_consumer; a stalled one cannot take the close
// frame and is aborted CloseTimeout after the close was decided, not before.
func TestSlowConsumerClosePolicy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const closeTimeout = 5 * time.Second
		h := newHarness(t, Config{SendQueueBytes: 8 << 10, MaxMessageBytes: 1 << 10, SlowConsumer: PolicyClose,
			WriteTimeout: time.Minute, CloseTimeout: closeTimeout, PingInterval: -1})
		w := h.connect(rw("t"))
		stalled := newMemConn()
		stalled.stall = make(chan struct{})
		h.connectConn(stalled, Info{Topic: "t", CanRead: true})
		healthy := h.connect(Info{Topic: "t", CanRead: true})
		decided := time.Now() // no time passes while the messages flow
		for i := range 100 {
			w.send(t, Binary, fmt.Sprintf("%0900d", i))
			healthy.recv(t)
		}
		synctest.Wait()
		if !h.closingOrGone(stalled) {
			t.Fatal("the overflowing reader is not being closed")
		}
		time.Sleep(time.Until(decided.Add(closeTimeout)) - time.Nanosecond)
		synctest.Wait()
		if isClosed(stalled) {
			t.Fatalf("aborted %v after the close was decided, before CloseTimeout", time.Since(decided))
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if !isClosed(stalled) {
			t.Fatal("not aborted CloseTimeout after the close was decided")
		}
		if r, ok := h.reason(stalled); !ok || r != ReasonSlowConsumer {
			t.Fatalf("accept returned %v (%v), want %v", r, ok, ReasonSlowConsumer)
		}
		if n := h.srv.Stats().Closes["slow_consumer"]; n != 1 {
			t.Fatalf("%d slow_consumer closes counted, want 1", n)
		}
	})
}

// TestDrainSpreadsTheCloses: Drain closes the open connections with 1001 in
// even batches over its window — the first batch at once, the last at the
// window, none before its time — refuses new connections from the start,
// and returns when every connection is gone.
func TestDrainSpreadsTheCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			conns  = 10
			window = 9 * time.Second // 10 batches of one, 1 s apart
		)
		h := newHarness(t, Config{PingInterval: -1})
		var ms []*memConn
		for range conns {
			ms = append(ms, h.connect(Info{Topic: "t", CanRead: true}))
		}
		start := time.Now()
		drained := make(chan error, 1)
		go func() { drained <- h.srv.Drain(context.Background(), window) }()
		synctest.Wait()
		if why := h.srv.Accept(context.Background(), newMemConn(), Info{Topic: "t", CanRead: true}); why != ReasonShutdown {
			t.Fatalf("a connection during the drain: %v, want %v", why, ReasonShutdown)
		}
		closedCount := func() int {
			n := 0
			for _, m := range ms {
				if isClosed(m) {
					n++
					if m.closeCode() != CloseGoingAway {
						t.Fatalf("closed with %d, want %d", m.closeCode(), CloseGoingAway)
					}
				}
			}
			return n
		}
		for step := range conns {
			// Just before batch step's moment, the earlier batches only.
			if step > 0 {
				time.Sleep(time.Until(start.Add(time.Duration(step)*time.Second)) - time.Nanosecond)
				synctest.Wait()
				if n := closedCount(); n != step {
					t.Fatalf("at +%v: %d closed, want %d", time.Since(start), n, step)
				}
				time.Sleep(time.Nanosecond)
				synctest.Wait()
			}
			if n := closedCount(); n != step+1 {
				t.Fatalf("at +%v: %d closed, want %d", time.Since(start), n, step+1)
			}
		}
		if err := <-drained; err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != window {
			t.Fatalf("drain took %v, want %v", took, window)
		}
	})
}

// TestDrainEndsEarlyWithItsContext: when the context ends before the window
// has, the connections not yet closed are closed at once.
func TestDrainEndsEarlyWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{PingInterval: -1})
		var ms []*memConn
		for range 4 {
			ms = append(ms, h.connect(Info{Topic: "t", CanRead: true}))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		h.srv.Drain(ctx, time.Hour)
		if took := time.Since(start); took != time.Second {
			t.Fatalf("drain took %v, want the context's 1 s", took)
		}
		for i, m := range ms {
			if !isClosed(m) {
				t.Fatalf("connection %d still open after the drain", i)
			}
		}
	})
}

// handshakeConn is a memConn whose transport holds its handshake: it
// records what the server looked like when Handshake was called.
type handshakeConn struct {
	*memConn
	srv     *Server
	topic   string
	mu      sync.Mutex
	calls   int
	readers int // the topic's readers at the first call
	closed  bool
}

func (h *handshakeConn) Handshake() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.calls++; h.calls == 1 {
		h.readers, h.closed = h.srv.Readers(h.topic), isClosed(h.memConn)
	}
	return nil
}

// TestHandshakeAfterRegistration: a transport that holds its handshake
// completes it once the connection is registered (a reader already counts),
// exactly once; a connection refused completes it before its close frame.
func TestHandshakeAfterRegistration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewServer(Config{PingInterval: -1, Denied: func(i *Info) bool { return i.Subject == "denied" }})
		if err != nil {
			t.Fatal(err)
		}
		hc := &handshakeConn{memConn: newMemConn(), srv: srv, topic: "t"}
		done := acceptIdle(srv, hc, Info{Topic: "t", CanRead: true})
		if hc.calls != 1 || hc.readers != 1 {
			t.Fatalf("handshake: %d calls, with %d readers registered; want 1 call after the reader", hc.calls, hc.readers)
		}
		refused := &handshakeConn{memConn: newMemConn(), srv: srv, topic: "t"}
		if why := srv.Accept(context.Background(), refused, Info{Topic: "t", CanRead: true, Identity: Identity{Subject: "denied"}}); why != ReasonDenied {
			t.Fatalf("a denied connection: %v", why)
		}
		if refused.calls != 1 || refused.closed || refused.closeCode() != CloseDenied {
			t.Fatalf("a denied connection: %d handshakes (closed before: %v), close %d", refused.calls, refused.closed, refused.closeCode())
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-done
	})
}

// gatePeers is a Peers whose Barrier waits for the test.
type gatePeers struct{ open chan struct{} }

func (gatePeers) Interest(string, bool)   {}
func (gatePeers) Forward(string, Message) {}
func (g gatePeers) Barrier(ctx context.Context, _ string) {
	select {
	case <-g.open:
	case <-ctx.Done():
	}
}

// writingConn is a handshakeConn that records whether anything was
// written before its handshake.
type writingConn struct {
	*handshakeConn
	early atomic.Bool // a write came before Handshake
}

func (w *writingConn) WriteMessages(msgs []Message, deadline time.Time) error {
	w.mu.Lock()
	done := w.calls > 0
	w.mu.Unlock()
	if !done {
		w.early.Store(true)
	}
	return w.handshakeConn.WriteMessages(msgs, deadline)
}

// TestNothingIsWrittenBeforeTheHandshake: a message that reaches a reader
// while its handshake is held (here: its barrier has not returned) waits in
// its queue and is written after the handshake, first: a frame before the
// 101 would corrupt the handshake (HAProxy answered such handshakes 502).
func TestNothingIsWrittenBeforeTheHandshake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewServer(Config{PingInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		gate := gatePeers{open: make(chan struct{})}
		if err := srv.SetPeers(gate); err != nil {
			t.Fatal(err)
		}
		wc := &writingConn{handshakeConn: &handshakeConn{memConn: newMemConn(), srv: srv, topic: "t"}}
		done := make(chan CloseReason, 1)
		go func() { done <- srv.Accept(context.Background(), wc, Info{Topic: "t", CanRead: true}) }()
		synctest.Wait() // registered, waiting at the barrier
		if n := srv.Publish("t", Message{Type: Text, Data: []byte("early")}); n != 1 {
			t.Fatalf("published to %d readers, want the registered one", n)
		}
		synctest.Wait()
		if wc.early.Load() || len(wc.out) != 0 {
			t.Fatal("a message was written before the handshake")
		}
		close(gate.open)
		synctest.Wait()
		if wc.early.Load() {
			t.Fatal("a message was written before the handshake")
		}
		select {
		case m := <-wc.out:
			if string(m.Data) != "early" {
				t.Fatalf("wrote %q", m.Data)
			}
		default:
			t.Fatal("the queued message was not written after the handshake")
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-done
	})
}

// TestPingIntervalPerConnection: a connection whose Info sets PingInterval
// is pinged at that interval, whatever the server's (here: never); another
// connection on the same server follows the server's.
func TestPingIntervalPerConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const own = 15 * time.Second
		srv, err := NewServer(Config{PingInterval: -1, PongTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		beat := &pingConn{memConn: newMemConn(), answer: true}
		plain := &pingConn{memConn: newMemConn(), answer: true}
		start := time.Now()
		acceptIdle(srv, beat, Info{Topic: "t", CanRead: true, PingInterval: own})
		acceptIdle(srv, plain, Info{Topic: "t", CanRead: true})
		time.Sleep(2*own + time.Second)
		synctest.Wait()
		pings := beat.sent()
		if len(pings) != 2 || !pings[0].Equal(start.Add(own)) || !pings[1].Equal(start.Add(2*own)) {
			t.Fatalf("pings at %v after the start, want at +%v and +%v", pings, own, 2*own)
		}
		if n := len(plain.sent()); n != 0 {
			t.Fatalf("a connection without its own interval was pinged %d times on a server that never pings", n)
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
