package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// memConn is an in-memory Conn. The test plays the peer: send() delivers a
// message to the server, recv() takes one the server wrote.
type memConn struct {
	in      chan Message  // peer → server
	out     chan Message  // server → peer; nil with discard
	discard atomic.Uint64 // when out is nil: messages written
	stall   chan struct{} // if non-nil, writes block until it is closed

	closed    chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	code      CloseCode // first close code the server sent; 0 for Abort
	peerCode  CloseCode // close code the peer sent, if any
	aborted   bool
}

func newMemConn() *memConn {
	return &memConn{in: make(chan Message, 64), out: make(chan Message, 1<<16), closed: make(chan struct{})}
}

var errAborted = errors.New("memconn: aborted")

func (m *memConn) ReadMessage() (MessageType, []byte, error) {
	select {
	case msg := <-m.in:
		return msg.Type, msg.Data, nil
	case <-m.closed:
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.peerCode != 0 {
			return 0, nil, &CloseError{Code: m.peerCode}
		}
		return 0, nil, errAborted
	}
}

func (m *memConn) WriteMessages(msgs []Message, deadline time.Time) error {
	if m.stall != nil {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-m.stall:
		case <-m.closed:
			return errAborted
		case <-t.C:
			return errors.New("memconn: write timeout")
		}
	}
	if m.out == nil {
		m.discard.Add(uint64(len(msgs)))
		return nil
	}
	for _, msg := range msgs {
		select {
		case m.out <- msg:
		default:
			return errors.New("memconn: test peer buffer full")
		}
	}
	return nil
}

func (m *memConn) Ping(deadline time.Time) error { return nil }

func (m *memConn) Close(code CloseCode, reason string) error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.code = code
		m.mu.Unlock()
		close(m.closed)
	})
	return nil
}

func (m *memConn) Abort() {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.aborted = true
		m.mu.Unlock()
		close(m.closed)
	})
}

// peerClose simulates the peer sending a close frame.
func (m *memConn) peerClose(code CloseCode) {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.peerCode = code
		m.mu.Unlock()
		close(m.closed)
	})
}

func (m *memConn) closeCode() CloseCode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.code
}

func (m *memConn) send(t *testing.T, typ MessageType, data string) {
	t.Helper()
	select {
	case m.in <- Message{Type: typ, Data: []byte(data)}:
	case <-time.After(5 * time.Second):
		t.Fatal("send blocked")
	}
}

func (m *memConn) recv(t *testing.T) Message {
	t.Helper()
	select {
	case msg := <-m.out:
		return msg
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	return Message{}
}

func (m *memConn) expectNothing(t *testing.T) {
	t.Helper()
	select {
	case msg := <-m.out:
		t.Fatalf("unexpected message %q", msg.Data)
	default:
	}
}

// waitClosed waits for the server to close m and returns the code it sent.
func (m *memConn) waitClosed(t *testing.T) CloseCode {
	t.Helper()
	select {
	case <-m.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed within 5s")
	}
	return m.closeCode()
}

type harness struct {
	t   *testing.T
	srv *Server
	wg  sync.WaitGroup
	mu  sync.Mutex
	why map[*memConn]CloseReason
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, why: map[*memConn]CloseReason{}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		h.wg.Wait()
		// Every byte counted into the node's queue budget was counted out.
		if n := srv.Stats().QueuedBytes; n != 0 {
			t.Errorf("after shutdown the node still counts %d queued bytes", n)
		}
	})
	return h
}

func (h *harness) connect(info Info) *memConn {
	m := newMemConn()
	h.connectConn(m, info)
	return m
}

func (h *harness) connectConn(m *memConn, info Info) {
	before := h.srv.Stats().Accepted
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		why := h.srv.Accept(context.Background(), m, info)
		h.mu.Lock()
		h.why[m] = why
		h.mu.Unlock()
	}()
	wait.For(h.t, "connection registered", func() bool { return h.srv.Stats().Accepted > before })
}

func (h *harness) reason(m *memConn) (CloseReason, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.why[m]
	return r, ok
}

func rw(topic string) Info { return Info{Topic: topic, CanRead: true, CanWrite: true} }

func TestFanOut(t *testing.T) {
	h := newHarness(t, Config{})
	a, b, c := h.connect(rw("t")), h.connect(rw("t")), h.connect(rw("t"))
	other := h.connect(rw("other"))
	ro := h.connect(Info{Topic: "t", CanRead: true})
	wo := h.connect(Info{Topic: "t", CanWrite: true})

	a.send(t, Text, "hello")
	a.send(t, Binary, "\x00\x01")
	for _, m := range []*memConn{b, c, ro} {
		if got := m.recv(t); got.Type != Text || string(got.Data) != "hello" {
			t.Fatalf("got %v %q", got.Type, got.Data)
		}
		if got := m.recv(t); got.Type != Binary || !bytes.Equal(got.Data, []byte{0, 1}) {
			t.Fatalf("got %v %q", got.Type, got.Data)
		}
	}
	// A read-only connection's messages go nowhere and are counted.
	ro.send(t, Text, "from ro")
	wo.send(t, Text, "from wo")
	for _, m := range []*memConn{a, b, c} {
		if got := m.recv(t); string(got.Data) != "from wo" {
			t.Fatalf("got %q, want message from write-only conn", got.Data)
		}
	}
	wait.For(t, "not_permitted drop counted", func() bool { return h.srv.Stats().Drops["not_permitted"] == 1 })
	a.expectNothing(t) // never echoed
	wo.expectNothing(t)
	other.expectNothing(t)
	if st := h.srv.Stats(); st.Topics != 2 || st.Connections != 6 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOrderPerSender(t *testing.T) {
	h := newHarness(t, Config{})
	w1, w2, r := h.connect(rw("t")), h.connect(rw("t")), h.connect(Info{Topic: "t", CanRead: true})
	const n = 2000
	var wg sync.WaitGroup
	for i, w := range []*memConn{w1, w2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				w.in <- Message{Type: Text, Data: fmt.Appendf(nil, "%d:%d", i, j)}
			}
		}()
	}
	next := [2]int{}
	for range 2 * n {
		var i, j int
		if _, err := fmt.Sscanf(string(r.recv(t).Data), "%d:%d", &i, &j); err != nil {
			t.Fatal(err)
		}
		if j != next[i] {
			t.Fatalf("sender %d: got message %d, want %d", i, j, next[i])
		}
		next[i]++
	}
	wg.Wait()
}

// TestStalledReader: a reader that never reads must not slow the writer or
// the healthy readers; its losses are counted.
func TestStalledReader(t *testing.T) {
	const queue = 64 << 10
	h := newHarness(t, Config{SendQueueBytes: queue, MaxMessageBytes: 1 << 10, WriteTimeout: time.Minute})
	w := h.connect(rw("t"))
	stalled := newMemConn()
	stalled.stall = make(chan struct{})
	h.connectConn(stalled, Info{Topic: "t", CanRead: true})
	healthy := []*memConn{h.connect(Info{Topic: "t", CanRead: true}), h.connect(Info{Topic: "t", CanRead: true})}

	const n = 5000 // 5000 × 1 KiB ≫ 64 KiB queue
	payload := string(bytes.Repeat([]byte("x"), 1000))
	// The healthy readers keep up (they take each window of messages as it
	// is sent); the stalled one never reads. If the stalled reader could
	// slow the sender or the others, this loop would stop.
	const window = 8
	for i := 0; i < n; i += window {
		for j := i; j < i+window; j++ {
			w.send(t, Text, fmt.Sprintf("%04d", j)+payload)
		}
		for _, r := range healthy {
			for j := i; j < i+window; j++ {
				if got := string(r.recv(t).Data[:4]); got != fmt.Sprintf("%04d", j) {
					t.Fatalf("healthy reader got %s, want %04d", got, j)
				}
			}
		}
	}
	// The stalled reader holds at most one queue's worth; the rest dropped.
	wait.For(t, "drops counted", func() bool {
		st := h.srv.Stats()
		return st.Drops["queue_head"]+st.Drops["queue_tail"] >= n-queue/(1000+4+MessageOverhead)-1
	})
	var stalledStatus ConnStatus
	for _, cs := range h.srv.Connections() {
		if cs.Drops > 0 {
			stalledStatus = cs
		}
	}
	if stalledStatus.QueuedBytes > queue {
		t.Fatalf("stalled reader holds %d bytes, bound is %d", stalledStatus.QueuedBytes, queue)
	}
	// Once it resumes, it gets the newest messages, in order, ending with the last.
	close(stalled.stall)
	last := -1
	for last != n-1 {
		var i int
		fmt.Sscanf(string(stalled.recv(t).Data[:4]), "%04d", &i)
		if i <= last {
			t.Fatalf("stalled reader: message %d after %d", i, last)
		}
		last = i
	}
}

func TestProtocolViolations(t *testing.T) {
	h := newHarness(t, Config{MaxMessageBytes: 10, SendQueueBytes: 1 << 10})
	big := h.connect(rw("t"))
	big.send(t, Binary, "01234567890")
	if code := big.waitClosed(t); code != CloseTooBig {
		t.Fatalf("too big: closed with %d", code)
	}
	bad := h.connect(rw("t"))
	bad.in <- Message{Type: Text, Data: []byte{0xff, 0xfe}}
	if code := bad.waitClosed(t); code != CloseInvalidData {
		t.Fatalf("bad utf8: closed with %d", code)
	}
	// Binary messages may hold anything.
	a, b := h.connect(rw("u")), h.connect(rw("u"))
	a.in <- Message{Type: Binary, Data: []byte{0xff, 0xfe}}
	b.recv(t)
	// The peer closing is recorded as such.
	a.peerClose(CloseNormal)
	wait.For(t, "peer close", func() bool { r, ok := h.reason(a); return ok && r == ReasonPeerClosed })
}

func TestShutdown(t *testing.T) {
	srv, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*memConn, 10)
	var wg sync.WaitGroup
	for i := range conns {
		conns[i] = newMemConn()
		wg.Add(1)
		go func() { defer wg.Done(); srv.Accept(context.Background(), conns[i], rw("t")) }()
	}
	wait.For(t, "all registered", func() bool { return srv.Stats().Connections == len(conns) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, m := range conns {
		if code := m.waitClosed(t); code != CloseGoingAway {
			t.Fatalf("closed with %d, want 1001", code)
		}
	}
	// New connections are refused with 1001.
	late := newMemConn()
	if why := srv.Accept(context.Background(), late, rw("t")); why != ReasonShutdown || late.closeCode() != CloseGoingAway {
		t.Fatalf("late accept: %v, code %d", why, late.closeCode())
	}
}

// TestShutdownAbortsStuckWriters: a connection whose writes hang is aborted
// when the shutdown deadline passes, so shutdown time is bounded.
func TestShutdownAbortsStuckWriters(t *testing.T) {
	srv, _ := NewServer(Config{WriteTimeout: time.Hour})
	stuck, w := newMemConn(), newMemConn()
	stuck.stall = make(chan struct{})
	done := make(chan struct{}, 2)
	go func() { srv.Accept(context.Background(), stuck, Info{Topic: "t", CanRead: true}); done <- struct{}{} }()
	go func() { srv.Accept(context.Background(), w, rw("t")); done <- struct{}{} }()
	wait.For(t, "registered", func() bool { return srv.Stats().Connections == 2 })
	w.send(t, Text, "x")
	wait.For(t, "write in flight", func() bool {
		for _, cs := range srv.Connections() {
			if cs.QueuedBytes > 0 {
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v, want deadline exceeded", err)
	}
	<-done
	<-done
}

func TestCloseWhere(t *testing.T) {
	h := newHarness(t, Config{})
	keep := h.connect(Info{Topic: "t", CanRead: true, Identity: Identity{BookingID: "b2"}})
	drop := []*memConn{h.connect(Info{Topic: "t", CanRead: true, Identity: Identity{BookingID: "b1"}}), h.connect(Info{Topic: "u", CanRead: true, Identity: Identity{BookingID: "b1"}})}
	n := h.srv.CloseWhere(func(i *Info) bool { return i.BookingID == "b1" }, CloseDenied, ReasonDenied, "booking denied")
	if n != 2 {
		t.Fatalf("closed %d, want 2", n)
	}
	for _, m := range drop {
		if code := m.waitClosed(t); code != CloseDenied {
			t.Fatalf("code %d", code)
		}
	}
	select {
	case <-keep.closed:
		t.Fatal("unrelated connection closed")
	default:
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{SendQueueBytes: 100, MaxMessageBytes: 1000},
		{MaxMessageBytes: -1},
		{WriteTimeout: -time.Second},
		{SlowConsumer: 7},
		{QueueBudgetBytes: -1},
	} {
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("NewServer(%+v) accepted", cfg)
		}
	}
	if _, err := ParsePolicy("sometimes"); err == nil {
		t.Error("ParsePolicy accepted junk")
	}
}

// TestFanOutAllocations proves the fan-out path makes no allocation per
// receiver: one message to 100 readers, with their write loops draining,
// allocates nothing in the steady state (the whole process is counted).
func TestFanOutAllocations(t *testing.T) {
	srv, _ := NewServer(Config{PingInterval: -1})
	sender := newMemConn()
	var wg sync.WaitGroup
	readers := make([]*memConn, 100)
	for i := range readers {
		readers[i] = newMemConn()
		readers[i].out = nil // discard
		wg.Add(1)
		go func() { defer wg.Done(); srv.Accept(context.Background(), readers[i], Info{Topic: "t", CanRead: true}) }()
	}
	wait.For(t, "registered", func() bool { return srv.Stats().Connections == len(readers) })
	c := newConn(srv, sender, rw("t"))
	srv.mu.Lock()
	c.topic = srv.topicLocked("t")
	srv.mu.Unlock()
	m := Message{Type: Binary, Data: make([]byte, 1024)}
	fanout := func() {
		for _, r := range *c.topic.readers.Load() {
			r.enqueue(m, nil)
		}
	}
	for range 1000 { // warm up queue arrays
		fanout()
	}
	allocs := testing.AllocsPerRun(2000, fanout)
	if allocs != 0 {
		t.Fatalf("fan-out to %d readers: %.2f allocations per message, want 0", len(readers), allocs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	wg.Wait()
	var delivered uint64
	for _, r := range readers {
		delivered += r.discard.Load()
	}
	if delivered == 0 {
		t.Fatal("nothing delivered")
	}
}

// BenchmarkFanOut100 measures the core's fan-out to 100 in-memory readers.
func BenchmarkFanOut100(b *testing.B) {
	srv, _ := NewServer(Config{PingInterval: -1})
	var wg sync.WaitGroup
	for range 100 {
		r := newMemConn()
		r.out = nil
		wg.Add(1)
		go func() { defer wg.Done(); srv.Accept(context.Background(), r, Info{Topic: "t", CanRead: true}) }()
	}
	wait.For(b, "readers registered", func() bool { return srv.Stats().Connections == 100 })
	c := newConn(srv, newMemConn(), rw("t"))
	c.topic = srv.topicLocked("t")
	m := Message{Type: Binary, Data: make([]byte, 1024)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, r := range *c.topic.readers.Load() {
			r.enqueue(m, nil)
		}
	}
	b.StopTimer()
	srv.Shutdown(context.Background())
	wg.Wait()
}

// TestSlowConsumerCloseFrame: a consumer that is slow, not dead, gets the
// 4008 close frame once its pending write completes.
func TestSlowConsumerCloseFrame(t *testing.T) {
	h := newHarness(t, Config{SendQueueBytes: 8 << 10, MaxMessageBytes: 1 << 10, SlowConsumer: PolicyClose, WriteTimeout: time.Minute})
	w := h.connect(rw("t"))
	slow := newMemConn()
	slow.stall = make(chan struct{})
	h.connectConn(slow, Info{Topic: "t", CanRead: true})
	closing := func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		for c := range h.srv.conns {
			if c.tc == slow {
				return c.closingFlag.Load()
			}
		}
		return true // already closed and gone
	}
	for i := 0; i < 100; i++ {
		w.send(t, Binary, fmt.Sprintf("%0900d", i))
	}
	wait.For(t, "overflow", closing)
	close(slow.stall)
	if code := slow.waitClosed(t); code != CloseSlowConsumer {
		t.Fatalf("closed with %d, want %d", code, CloseSlowConsumer)
	}
}

func TestSystemTopicAndPublish(t *testing.T) {
	var connects, closes atomic.Int32
	h := newHarness(t, Config{
		OnConnect: func(ConnStatus) { connects.Add(1) },
		OnClose:   func(ConnStatus, CloseReason) { closes.Add(1) },
	})
	r1 := h.connect(Info{Topic: "stats", CanRead: true, SystemTopic: true})
	r2 := h.connect(Info{Topic: "stats", CanRead: true, SystemTopic: true})
	if n := h.srv.Publish("stats", Message{Type: Text, Data: []byte(`{"n":1}`)}); n != 2 {
		t.Fatalf("published to %d readers, want 2", n)
	}
	for _, r := range []*memConn{r1, r2} {
		if got := r.recv(t); string(got.Data) != `{"n":1}` {
			t.Fatalf("got %q", got.Data)
		}
	}
	if n := h.srv.Publish("nobody", Message{Type: Text, Data: []byte("x")}); n != 0 {
		t.Fatalf("published to %d readers of an empty topic", n)
	}
	if h.srv.Readers("stats") != 2 {
		t.Fatalf("readers %d", h.srv.Readers("stats"))
	}
	// Writing to a system topic is a policy violation.
	r1.send(t, Text, "hello")
	if code := r1.waitClosed(t); code != ClosePolicy {
		t.Fatalf("closed with %d, want 1008", code)
	}
	wait.For(t, "hooks", func() bool { return connects.Load() == 2 && closes.Load() == 1 })
	r2.expectNothing(t)
}

func TestConnStatus(t *testing.T) {
	h := newHarness(t, Config{})
	w, r := h.connect(rw("t")), h.connect(Info{Topic: "t", CanRead: true, Identity: Identity{BookingID: "b"}})
	w.send(t, Text, "12345")
	r.recv(t)
	wait.For(t, "counters", func() bool {
		for _, cs := range h.srv.Connections() {
			if cs.Info.BookingID == "b" && cs.MessagesOut == 1 && cs.BytesOut == 5 && !cs.LastActivity.Before(cs.ConnectedAt) {
				return true
			}
		}
		return false
	})
}

// TestAcceptPair: a pair relays 1:1 both ways with back-pressure instead of
// drops, and when one side closes the other is closed with 1000.
func TestAcceptPair(t *testing.T) {
	srv, _ := NewServer(Config{SendQueueBytes: 4 << 10, MaxMessageBytes: 1 << 10, PingInterval: -1, WriteTimeout: time.Minute})
	a, b := newMemConn(), newMemConn()
	b.stall = make(chan struct{}) // b is slow at first
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.AcceptPair(context.Background(), a, Info{Topic: "pair:x", CanRead: true, CanWrite: true}, b, Info{Topic: "pair:x", CanRead: true, CanWrite: true})
	}()
	wait.For(t, "pair registered", func() bool { return srv.Stats().Connections == 2 })
	// 100 × 1000 bytes through a 4 KiB queue to a stalled reader: the
	// sender is held up, nothing is dropped.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range 100 {
			a.in <- Message{Type: Binary, Data: []byte(fmt.Sprintf("%04d%0996d", i, 0))}
		}
	}()
	wait.For(t, "sender held up", func() bool { return len(a.in) == cap(a.in) })
	close(b.stall)
	for i := range 100 {
		if got := string(b.recv(t).Data[:4]); got != fmt.Sprintf("%04d", i) {
			t.Fatalf("message %s, want %04d", got, i)
		}
	}
	<-sent
	b.send(t, Text, "back")
	if got := a.recv(t); string(got.Data) != "back" {
		t.Fatalf("a got %q", got.Data)
	}
	if st := srv.Stats(); st.Drops["queue_head"]+st.Drops["queue_tail"] != 0 {
		t.Fatalf("drops in a pair: %+v", st.Drops)
	}
	b.peerClose(CloseNormal)
	if code := a.waitClosed(t); code != CloseNormal {
		t.Fatalf("a closed with %d, want 1000", code)
	}
	<-done
	if srv.Stats().Closes["pair_closed"] != 1 {
		t.Fatalf("closes %+v", srv.Stats().Closes)
	}
}

// TestSystemTopicReaderHoldsAWholeReport: the server publishes a report to
// a system topic as one burst of parts; a reader of it keeps up to
// SystemTopicQueueBytes queued, so a report larger than an ordinary send
// queue reaches a reader that is briefly behind whole, while an ordinary
// reader of the same size of burst loses messages.
func TestSystemTopicReaderHoldsAWholeReport(t *testing.T) {
	const queue = 64 << 10
	h := newHarness(t, Config{SendQueueBytes: queue, MaxMessageBytes: 32 << 10, WriteTimeout: time.Minute})
	sys, plain := newMemConn(), newMemConn()
	sys.stall, plain.stall = make(chan struct{}), make(chan struct{})
	h.connectConn(sys, Info{Topic: "stats", CanRead: true, SystemTopic: true})
	h.connectConn(plain, Info{Topic: "news", CanRead: true})
	part := bytes.Repeat([]byte("r"), 30<<10)
	const parts = 10 // 300 KiB: more than an ordinary queue, far less than a system reader's
	for i := range parts {
		p := append([]byte{byte('0' + i)}, part...)
		h.srv.Publish("stats", Message{Type: Text, Data: p})
		h.srv.Publish("news", Message{Type: Text, Data: p})
	}
	close(sys.stall)
	for i := range parts {
		if got := sys.recv(t).Data[0]; got != byte('0'+i) {
			t.Fatalf("system reader: part %c, want %c", got, '0'+i)
		}
	}
	wait.For(t, "the ordinary reader's drops", func() bool {
		st := h.srv.Stats()
		return st.Drops["queue_head"]+st.Drops["queue_tail"] > 0
	})
	close(plain.stall)
}
