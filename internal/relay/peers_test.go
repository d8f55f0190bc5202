package relay

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// fakePeers records what the relay tells its Peers.
type fakePeers struct {
	gate chan struct{} // if non-nil, Interest waits until it is closed: a slow Peers

	inside     atomic.Int32 // Interest calls running now
	overlapped atomic.Bool  // two Interest calls ran at once

	mu       sync.Mutex
	interest map[string][]bool // per topic, every report in order
	forwards []forwarded
}

type forwarded struct {
	topic string
	typ   MessageType
	data  string
}

func newFakePeers() *fakePeers { return &fakePeers{interest: map[string][]bool{}} }

func (f *fakePeers) Interest(topic string, on bool) {
	if f.inside.Add(1) != 1 {
		f.overlapped.Store(true)
	}
	defer f.inside.Add(-1)
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	f.interest[topic] = append(f.interest[topic], on)
	f.mu.Unlock()
}

func (f *fakePeers) Forward(topic string, m Message) {
	f.mu.Lock()
	f.forwards = append(f.forwards, forwarded{topic, m.Type, string(m.Data)})
	f.mu.Unlock()
}

func (f *fakePeers) reports(topic string) []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.interest[topic])
}

func (f *fakePeers) forwardsOf(topic string) []forwarded {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []forwarded
	for _, fw := range f.forwards {
		if fw.topic == topic {
			out = append(out, fw)
		}
	}
	return out
}

// lastReport returns the state last reported for topic and whether any was.
func (f *fakePeers) lastReport(topic string) (on, any bool) {
	r := f.reports(topic)
	if len(r) == 0 {
		return false, false
	}
	return r[len(r)-1], true
}

// checkAlternates fails unless reports alternate on, off, on, … from on.
func checkAlternates(t *testing.T, topic string, reports []bool) {
	t.Helper()
	for i, on := range reports {
		if on != (i%2 == 0) {
			t.Fatalf("topic %s: interest reports %v do not alternate on, off, … from on", topic, reports)
		}
	}
}

// quiet reports whether no interest change is waiting to be reported.
func (s *Server) interestQuiet() bool {
	s.interest.mu.Lock()
	defer s.interest.mu.Unlock()
	return !s.interest.running
}

func newPeeredHarness(t *testing.T, cfg Config, p Peers) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	if err := h.srv.SetPeers(p); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestInterestReports: the first local reader turns a topic's interest on
// and the last one off; writers, and the Backpressure readers of a pair, do
// not count.
func TestInterestReports(t *testing.T) {
	fp := newFakePeers()
	h := newPeeredHarness(t, Config{PingInterval: -1}, fp)

	w := h.connect(Info{Topic: "t", CanWrite: true})
	r1 := h.connect(Info{Topic: "t", CanRead: true})
	r2 := h.connect(rw("t"))
	wait.For(t, "interest on", func() bool { on, _ := fp.lastReport("t"); return on })
	r1.peerClose(CloseNormal)
	wait.For(t, "r1 gone", func() bool { return h.srv.Readers("t") == 1 })
	r2.peerClose(CloseNormal)
	wait.For(t, "interest off", func() bool { on, any := fp.lastReport("t"); return any && !on })
	wait.For(t, "reports done", h.srv.interestQuiet)
	if got := fp.reports("t"); !slices.Equal(got, []bool{true, false}) {
		t.Fatalf("reports for t: %v, want [true false] (the writer alone is no interest)", got)
	}

	a, b := newMemConn(), newMemConn()
	pairDone := make(chan struct{})
	go func() {
		defer close(pairDone)
		h.srv.AcceptPair(context.Background(), a, rw("pair:x"), b, rw("pair:x"))
	}()
	wait.For(t, "pair registered", func() bool { return h.srv.Readers("pair:x") == 2 })
	if n := h.srv.Deliver("pair:x", Message{Type: Text, Data: []byte("intruder")}); n != 0 {
		t.Fatalf("a remote message reached %d readers of a pair", n)
	}
	a.peerClose(CloseNormal)
	<-pairDone
	wait.For(t, "reports done", h.srv.interestQuiet)
	if got := fp.reports("pair:x"); len(got) != 0 {
		t.Fatalf("a pair's topic reported interest %v", got)
	}
	w.peerClose(CloseNormal)
}

// TestInterestOrderUnderChurn: readers come and go on a few topics from
// many goroutines at once while Peers is stuck in its first report. The
// relay is not held up; once Peers resumes, each topic's reports alternate
// from on, calls never overlap, and the last report of each topic is its
// state.
func TestInterestOrderUnderChurn(t *testing.T) {
	fp := newFakePeers()
	fp.gate = make(chan struct{})
	srv, err := NewServer(Config{PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetPeers(fp); err != nil {
		t.Fatal(err)
	}
	const (
		topics     = 4
		goroutines = 8
		rounds     = 40
	)
	topic := func(i int) string { return fmt.Sprintf("t%d", i%topics) }
	var accepts sync.WaitGroup
	accept := func(m *memConn, info Info) {
		accepts.Add(1)
		go func() { defer accepts.Done(); srv.Accept(context.Background(), m, info) }()
	}
	// One reader stays on t0 to the end.
	stay := newMemConn()
	accept(stay, Info{Topic: topic(0), CanRead: true})

	var churn sync.WaitGroup
	for g := range goroutines {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for i := range rounds {
				m := newMemConn()
				accept(m, Info{Topic: topic(g + i), CanRead: true})
				// Leave at once or a little later: registration and
				// removal race with other goroutines' on the same topic.
				for k := 0; i%3 != 0 && k < 1000 && srv.Readers(topic(g+i)) == 0; k++ {
					runtime.Gosched()
				}
				m.peerClose(CloseNormal)
			}
		}()
	}
	churn.Wait()
	// Every churning connection has ended although Peers never answered:
	// interest changes did not hold up connects or disconnects.
	wait.For(t, "churn connections ended", func() bool { return srv.Stats().Connections == 1 })
	wait.For(t, "the first report stuck in Peers", func() bool { return fp.inside.Load() == 1 })
	close(fp.gate)
	wait.For(t, "reports done", srv.interestQuiet)
	for i := range topics {
		reports := fp.reports(topic(i))
		checkAlternates(t, topic(i), reports)
		if want := i == 0; len(reports) == 0 && want || len(reports) > 0 && reports[len(reports)-1] != want {
			t.Fatalf("topic %s: last report %v, want %v (readers now: %d)", topic(i), reports, want, srv.Readers(topic(i)))
		}
	}
	if fp.overlapped.Load() {
		t.Fatal("Interest calls overlapped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	accepts.Wait()
	if got := fp.reports(topic(0)); got[len(got)-1] {
		t.Fatalf("after shutdown t0's last report is %v, want off", got)
	}
}

// TestForwardOncePerMessage: a local message is offered to Peers once,
// whatever the number of local readers, in order, and only while another
// node reads its topic.
func TestForwardOncePerMessage(t *testing.T) {
	fp := newFakePeers()
	h := newPeeredHarness(t, Config{PingInterval: -1}, fp)
	// Remote interest may come before the topic has local connections.
	h.srv.SetRemoteInterest("t", true)
	w := h.connect(rw("t"))
	readers := []*memConn{h.connect(Info{Topic: "t", CanRead: true}), h.connect(Info{Topic: "t", CanRead: true}), h.connect(rw("t"))}
	ro := h.connect(Info{Topic: "t", CanRead: true})
	other := h.connect(rw("u"))

	const n = 20
	for i := range n {
		w.send(t, Binary, fmt.Sprintf("m%02d", i))
	}
	ro.send(t, Text, "not permitted")  // counted, neither relayed nor forwarded
	other.send(t, Text, "u's message") // nobody else reads u
	for _, r := range readers {
		for i := range n {
			if got := string(r.recv(t).Data); got != fmt.Sprintf("m%02d", i) {
				t.Fatalf("local reader got %s, want m%02d", got, i)
			}
		}
	}
	wait.For(t, "forwards", func() bool { return len(fp.forwardsOf("t")) == n })
	wait.For(t, "not_permitted counted", func() bool { return h.srv.Stats().Drops["not_permitted"] == 1 })
	for i, fw := range fp.forwardsOf("t") {
		if want := (forwarded{"t", Binary, fmt.Sprintf("m%02d", i)}); fw != want {
			t.Fatalf("forward %d: %+v, want %+v", i, fw, want)
		}
	}
	if got := fp.forwardsOf("u"); len(got) != 0 {
		t.Fatalf("forwarded %v on a topic no other node reads", got)
	}

	// Interest withdrawn: the next message stays local.
	h.srv.SetRemoteInterest("t", false)
	w.send(t, Text, "local only")
	for _, r := range readers {
		if got := string(r.recv(t).Data); got != "local only" {
			t.Fatalf("got %q", got)
		}
	}
	if got := len(fp.forwardsOf("t")); got != n {
		t.Fatalf("%d forwards after interest was withdrawn, want %d", got, n)
	}
}

// TestSetPeersOnlyBeforeConnections: Peers cannot be swapped under running
// connections, whose interest would never have been reported.
func TestSetPeersOnlyBeforeConnections(t *testing.T) {
	h := newHarness(t, Config{PingInterval: -1})
	h.connect(rw("t"))
	if err := h.srv.SetPeers(newFakePeers()); err == nil {
		t.Fatal("SetPeers accepted with a connection open")
	}
	// Without Peers, remote interest means nothing and Forward is never called.
	h.srv.SetRemoteInterest("t", true)
	if h.srv.topicLocked("t").remote.Load() {
		t.Fatal("remote interest recorded without Peers")
	}
}

// TestDeliver: a message from another node reaches every local reader of
// its topic, the writers that read included, in order; a topic without
// readers counts it as no_readers.
func TestDeliver(t *testing.T) {
	h := newPeeredHarness(t, Config{PingInterval: -1}, newFakePeers())
	readers := []*memConn{h.connect(Info{Topic: "t", CanRead: true}), h.connect(rw("t"))}
	h.connect(Info{Topic: "t", CanWrite: true}) // cannot read: not offered
	for i := range 50 {
		if n := h.srv.Deliver("t", Message{Type: Text, Data: fmt.Appendf(nil, "r%02d", i)}); n != len(readers) {
			t.Fatalf("Deliver queued for %d readers, want %d", n, len(readers))
		}
	}
	for _, r := range readers {
		for i := range 50 {
			if got := string(r.recv(t).Data); got != fmt.Sprintf("r%02d", i) {
				t.Fatalf("got %s, want r%02d", got, i)
			}
		}
	}
	if n := h.srv.Deliver("nobody", Message{Type: Text, Data: []byte("x")}); n != 0 {
		t.Fatalf("Deliver to an empty topic queued for %d", n)
	}
	st := h.srv.Stats()
	if st.Drops["no_readers"] != 1 || st.RemoteIn != 51 {
		t.Fatalf("no_readers %d, remote in %d; want 1 and 51", st.Drops["no_readers"], st.RemoteIn)
	}
	h.srv.CountRemoteDrops(DropBusLost, 3)
	h.srv.CountRemoteDrops(DropQueueHead, 5) // a connection's reason: not the node's
	if st := h.srv.Stats(); st.Drops["bus_lost"] != 3 || st.Drops["queue_head"] != 0 {
		t.Fatalf("bus_lost %d, queue_head %d; want 3 and 0", st.Drops["bus_lost"], st.Drops["queue_head"])
	}
}

// TestDeliverQueueBounds: remote messages obey each reader's queue bound:
// a stalled reader loses its oldest ones, counted as queue_head/queue_tail,
// while a reader that keeps up gets them all; Deliver never waits.
func TestDeliverQueueBounds(t *testing.T) {
	const queue = 8 << 10
	h := newPeeredHarness(t, Config{SendQueueBytes: queue, MaxMessageBytes: 1 << 10, WriteTimeout: time.Minute,
		CloseTimeout: 50 * time.Millisecond, PingInterval: -1}, newFakePeers())
	stalled := newMemConn()
	stalled.stall = make(chan struct{})
	h.connectConn(stalled, Info{Topic: "t", CanRead: true})
	fast := h.connect(Info{Topic: "t", CanRead: true})
	const n = 200 // 200 × ~1 KiB ≫ 8 KiB
	for i := range n {
		h.srv.Deliver("t", Message{Type: Binary, Data: fmt.Appendf(nil, "%04d%0996d", i, 0)})
		if got := string(fast.recv(t).Data[:4]); got != fmt.Sprintf("%04d", i) {
			t.Fatalf("fast reader got %s, want %04d", got, i)
		}
	}
	st := h.srv.Stats()
	if lost := st.Drops["queue_head"] + st.Drops["queue_tail"]; lost < n-queue/(1000+MessageOverhead)-1 {
		t.Fatalf("stalled reader lost %d messages, want at least %d", lost, n-queue/(1000+MessageOverhead)-1)
	}
	for _, cs := range h.srv.Connections() {
		if cs.QueuedBytes > queue {
			t.Fatalf("a reader holds %d bytes, bound %d", cs.QueuedBytes, queue)
		}
	}
}

// nopPeers counts forwards and does nothing else.
type nopPeers struct{ forwards atomic.Uint64 }

func (p *nopPeers) Interest(string, bool)   {}
func (p *nopPeers) Forward(string, Message) { p.forwards.Add(1) }

// allocReaders starts n discarding readers of topic on srv and returns a
// function that shuts the server down and reports the deliveries.
func allocReaders(t *testing.T, srv *Server, topic string, n int) func() uint64 {
	t.Helper()
	var wg sync.WaitGroup
	readers := make([]*memConn, n)
	for i := range readers {
		readers[i] = newMemConn()
		readers[i].out = nil // discard
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Accept(context.Background(), readers[i], Info{Topic: topic, CanRead: true})
		}()
	}
	wait.For(t, "registered", func() bool { return srv.Readers(topic) == n })
	return func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		wg.Wait()
		var delivered uint64
		for _, r := range readers {
			delivered += r.discard.Load()
		}
		return delivered
	}
}

// TestForwardAllocations: a sender's fan-out to 100 local readers plus the
// forward to Peers (here one that does nothing) allocates nothing.
func TestForwardAllocations(t *testing.T) {
	srv, _ := NewServer(Config{PingInterval: -1})
	peers := &nopPeers{}
	if err := srv.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	stop := allocReaders(t, srv, "t", 100)
	srv.SetRemoteInterest("t", true)
	c := newConn(srv, newMemConn(), rw("t"))
	srv.mu.Lock()
	c.topic = srv.topicLocked("t")
	srv.mu.Unlock()
	m := Message{Type: Binary, Data: make([]byte, 1024)}
	for range 1000 { // warm up queue arrays
		c.fanOut(m)
	}
	if allocs := testing.AllocsPerRun(2000, func() { c.fanOut(m) }); allocs != 0 {
		t.Fatalf("fan-out to 100 readers and a forward: %.2f allocations per message, want 0", allocs)
	}
	if peers.forwards.Load() < 3000 {
		t.Fatalf("%d forwards, want one per message", peers.forwards.Load())
	}
	if stop() == 0 {
		t.Fatal("nothing delivered")
	}
}

// TestDeliverAllocations: a message from another node queued for 100 local
// readers allocates nothing.
func TestDeliverAllocations(t *testing.T) {
	srv, _ := NewServer(Config{PingInterval: -1})
	if err := srv.SetPeers(&nopPeers{}); err != nil {
		t.Fatal(err)
	}
	stop := allocReaders(t, srv, "t", 100)
	m := Message{Type: Binary, Data: make([]byte, 1024)}
	deliver := func() {
		if n := srv.Deliver("t", m); n != 100 {
			t.Fatalf("queued for %d readers, want 100", n)
		}
	}
	for range 1000 {
		deliver()
	}
	if allocs := testing.AllocsPerRun(2000, deliver); allocs != 0 {
		t.Fatalf("Deliver to 100 readers: %.2f allocations per message, want 0", allocs)
	}
	if stop() == 0 {
		t.Fatal("nothing delivered")
	}
}
