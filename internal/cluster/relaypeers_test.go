package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// testConn is an in-memory relay.Conn: the test writes to in and reads
// what the relay wrote from out (or only counts it, when out is nil).
type testConn struct {
	in      chan relay.Message
	out     chan relay.Message
	written atomic.Uint64
	closed  chan struct{}
	once    sync.Once
}

func newTestConn(keep bool) *testConn {
	c := &testConn{in: make(chan relay.Message, 64), closed: make(chan struct{})}
	if keep {
		c.out = make(chan relay.Message, 4096)
	}
	return c
}

func (c *testConn) ReadMessage() (relay.MessageType, []byte, error) {
	select {
	case m := <-c.in:
		return m.Type, m.Data, nil
	case <-c.closed:
		return 0, nil, &relay.CloseError{Code: relay.CloseNormal}
	}
}

func (c *testConn) WriteMessages(msgs []relay.Message, _ time.Time) error {
	for _, m := range msgs {
		if c.out != nil {
			select {
			case c.out <- m:
			default:
				return fmt.Errorf("testConn: reader's buffer full")
			}
		}
	}
	c.written.Add(uint64(len(msgs)))
	return nil
}

func (c *testConn) Ping(time.Time) error { return nil }
func (c *testConn) Close(relay.CloseCode, string) error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *testConn) Abort() { c.once.Do(func() { close(c.closed) }) }

func (c *testConn) send(t *testing.T, data string) {
	t.Helper()
	select {
	case c.in <- relay.Message{Type: relay.Text, Data: []byte(data)}:
	case <-time.After(5 * time.Second):
		t.Fatal("send blocked")
	}
}

func (c *testConn) recv(t *testing.T) string {
	t.Helper()
	select {
	case m := <-c.out:
		return string(m.Data)
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5 s")
		return ""
	}
}

// node is one relay with its bus and RelayPeers.
type node struct {
	relay *relay.Server
	bus   *membus.Bus
	peers *cluster.RelayPeers
	conns sync.WaitGroup
}

func newNode(t *testing.T, net *membus.Network, id string) *node {
	t.Helper()
	rs, err := relay.NewServer(relay.Config{PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	bus, err := net.Join(id)
	if err != nil {
		t.Fatal(err)
	}
	peers, err := cluster.NewRelayPeers(cluster.RelayConfig{Bus: bus, Relay: rs,
		UnsubscribeDelay: 20 * time.Millisecond, AnnounceRetry: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	n := &node{relay: rs, bus: bus, peers: peers}
	t.Cleanup(n.close)
	return n
}

// close shuts the node down in the server's order: relay, peers, bus.
func (n *node) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.relay.Shutdown(ctx)
	n.conns.Wait()
	n.peers.Close()
	n.bus.Close()
}

func (n *node) connect(t *testing.T, info relay.Info) *testConn {
	t.Helper()
	c := newTestConn(info.CanRead)
	before := n.relay.Stats().Accepted
	n.conns.Add(1)
	go func() { defer n.conns.Done(); n.relay.Accept(context.Background(), c, info) }()
	wait.For(t, "connection registered", func() bool { return n.relay.Stats().Accepted > before })
	return c
}

func reader(topic string) relay.Info { return relay.Info{Topic: topic, CanRead: true} }
func rw(topic string) relay.Info     { return relay.Info{Topic: topic, CanRead: true, CanWrite: true} }

func newNetwork(t *testing.T, opts membus.Options) *membus.Network {
	t.Helper()
	net, err := membus.NewNetwork(opts)
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// TestRelayAcrossNodes: a message written on one node reaches the readers
// of its topic on every node, once each, in order; the bus carries it once
// per message although two readers on the other node take it.
func TestRelayAcrossNodes(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	a, b := newNode(t, net, "a"), newNode(t, net, "b")
	wa, ra := a.connect(t, rw("t")), a.connect(t, reader("t"))
	rb1, rb2 := b.connect(t, reader("t")), b.connect(t, rw("t"))
	wait.For(t, "a to learn that b reads t", func() bool { return a.peers.RemoteNodes("t") == 1 })
	wait.For(t, "b to learn that a reads t", func() bool { return b.peers.RemoteNodes("t") == 1 })

	const n = 50
	for i := range n {
		wa.send(t, fmt.Sprintf("m%02d", i))
	}
	for _, r := range []*testConn{ra, rb1, rb2} {
		for i := range n {
			if got := r.recv(t); got != fmt.Sprintf("m%02d", i) {
				t.Fatalf("got %s, want m%02d", got, i)
			}
		}
	}
	// b answers after its readers had everything: a copy of a's own
	// messages coming back to a would reach ra before this.
	rb2.send(t, "from b")
	for _, r := range []*testConn{ra, wa} {
		if got := r.recv(t); got != "from b" {
			t.Fatalf("a's reader got %q, want b's message (a message delivered twice?)", got)
		}
	}
	if got := rb1.recv(t); got != "from b" {
		t.Fatalf("b's other reader got %q", got)
	}
	if st := a.peers.Stats(); st.Forwarded != n || st.Received != 1 {
		t.Fatalf("a forwarded %d and received %d, want %d and 1", st.Forwarded, st.Received, n)
	}
	if st := b.peers.Stats(); st.Forwarded != 1 || st.Received != n {
		t.Fatalf("b forwarded %d and received %d, want 1 and %d", st.Forwarded, st.Received, n)
	}
	if st := b.relay.Stats(); st.RemoteIn != n || st.Drops["bus_lost"] != 0 || st.Drops["no_readers"] != 0 {
		t.Fatalf("b's relay: remote in %d, drops %v", st.RemoteIn, st.Drops)
	}
}

// TestNothingPublishedWithoutRemoteReaders: a topic no other node reads
// stays on its node, even when the other node reads other topics.
func TestNothingPublishedWithoutRemoteReaders(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	a, b := newNode(t, net, "a"), newNode(t, net, "b")
	b.connect(t, reader("u"))
	wait.For(t, "a to learn that b reads u", func() bool { return a.peers.RemoteNodes("u") == 1 })
	w, r := a.connect(t, rw("t")), a.connect(t, reader("t"))
	for i := range 20 {
		w.send(t, fmt.Sprint(i))
		r.recv(t)
	}
	if st := a.peers.Stats(); st.Forwarded != 0 || st.PublishErrors != 0 {
		t.Fatalf("a published %d messages (%d errors) for a topic only it reads", st.Forwarded, st.PublishErrors)
	}
}

// TestSingleNode: a node alone on the in-memory bus relays through the same
// paths and delivers each message once.
func TestSingleNode(t *testing.T) {
	n := newNode(t, newNetwork(t, membus.Options{}), "solo")
	w, r := n.connect(t, rw("t")), n.connect(t, reader("t"))
	wait.For(t, "t subscribed", func() bool { return n.peers.Stats().LocalTopics == 1 })
	for i := range 20 {
		w.send(t, fmt.Sprint(i))
	}
	for i := range 20 {
		if got := r.recv(t); got != fmt.Sprint(i) {
			t.Fatalf("got %s, want %d", got, i)
		}
	}
	w.send(t, "last")
	if got := r.recv(t); got != "last" {
		t.Fatalf("got %q after the 20: a message delivered twice", got)
	}
	if st := n.peers.Stats(); st.Forwarded != 0 || st.Received != 0 || st.Members != 0 {
		t.Fatalf("alone, yet %+v", st)
	}
}

// TestTopicsWithDotsAndSlashesStayApart: "a.b" and "a/b" never share a
// subject, so neither's readers get the other's messages.
func TestTopicsWithDotsAndSlashesStayApart(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	a, b := newNode(t, net, "a"), newNode(t, net, "b")
	dot, slash := b.connect(t, reader("a.b")), b.connect(t, reader("a/b"))
	wait.For(t, "interest", func() bool { return a.peers.RemoteNodes("a.b") == 1 && a.peers.RemoteNodes("a/b") == 1 })
	wd, ws := a.connect(t, relay.Info{Topic: "a.b", CanWrite: true}), a.connect(t, relay.Info{Topic: "a/b", CanWrite: true})
	wd.send(t, "dot 1")
	ws.send(t, "slash 1")
	wd.send(t, "dot 2")
	ws.send(t, "slash 2")
	for _, want := range []string{"dot 1", "dot 2"} {
		if got := dot.recv(t); got != want {
			t.Fatalf("a.b's reader got %q, want %q", got, want)
		}
	}
	for _, want := range []string{"slash 1", "slash 2"} {
		if got := slash.recv(t); got != want {
			t.Fatalf("a/b's reader got %q, want %q", got, want)
		}
	}
}

// TestInterestFollowsReaders: when the last reader on a node leaves, the
// others stop publishing to it (after the unsubscribe delay); when one
// comes back, messages flow again; a node that goes down takes its
// interest with it.
func TestInterestFollowsReaders(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	a, b := newNode(t, net, "a"), newNode(t, net, "b")
	w := a.connect(t, relay.Info{Topic: "t", CanWrite: true})
	r := b.connect(t, reader("t"))
	wait.For(t, "interest on", func() bool { return a.peers.RemoteNodes("t") == 1 })
	w.send(t, "1")
	if got := r.recv(t); got != "1" {
		t.Fatalf("got %q", got)
	}
	r.Close(relay.CloseNormal, "")
	wait.For(t, "interest off", func() bool { return a.peers.RemoteNodes("t") == 0 && b.peers.Stats().LocalTopics == 0 })
	w.send(t, "nobody")
	wait.For(t, "a's message relayed locally", func() bool { return a.relay.Stats().MessagesIn == 2 })
	if st := a.peers.Stats(); st.Forwarded != 1 {
		t.Fatalf("a forwarded %d messages, want 1: none once b's reader left", st.Forwarded)
	}
	r2 := b.connect(t, reader("t"))
	wait.For(t, "interest on again", func() bool { return a.peers.RemoteNodes("t") == 1 })
	w.send(t, "2")
	if got := r2.recv(t); got != "2" {
		t.Fatalf("got %q", got)
	}
	b.close()
	wait.For(t, "b's interest gone with b", func() bool { return a.peers.RemoteNodes("t") == 0 && a.peers.Stats().Members == 0 })
}

// TestLateJoiner: a node that joins after another's readers connected
// learns of them, and its writers reach them.
func TestLateJoiner(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	a := newNode(t, net, "a")
	r := a.connect(t, reader("t"))
	wait.For(t, "t subscribed", func() bool { return a.peers.Stats().LocalTopics == 1 })
	b := newNode(t, net, "b")
	wait.For(t, "b to learn that a reads t", func() bool { return b.peers.RemoteNodes("t") == 1 })
	b.connect(t, relay.Info{Topic: "t", CanWrite: true}).send(t, "hello from b")
	if got := r.recv(t); got != "hello from b" {
		t.Fatalf("got %q", got)
	}
}

// TestChurnConverges: readers come and go on both nodes of three; once
// they stop, each node's view of the others' interest is exact.
func TestChurnConverges(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	nodes := []*node{newNode(t, net, "a"), newNode(t, net, "b"), newNode(t, net, "c")}
	topics := []string{"t0", "t1", "t2"}
	var churn sync.WaitGroup
	for ni, n := range nodes {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for i := range 30 {
				c := n.connect(t, reader(topics[(ni+i)%len(topics)]))
				if i%4 != 0 {
					c.Close(relay.CloseNormal, "")
				}
			}
		}()
	}
	churn.Wait()
	for _, n := range nodes {
		for _, topic := range topics {
			want := 0
			for _, other := range nodes {
				if other != n && other.relay.Readers(topic) > 0 {
					want++
				}
			}
			wait.For(t, fmt.Sprintf("%s's view of %s", n.bus.NodeID(), topic), func() bool { return n.peers.RemoteNodes(topic) == want })
		}
	}
}

// TestSequenceGapsCounted: messages lost between nodes show as a gap in
// the source's sequence and are counted as bus_lost; a source that starts
// over is not a loss; a message claiming to come from the node itself is
// not delivered again.
func TestSequenceGapsCounted(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	b := newNode(t, net, "b")
	r := b.connect(t, reader("t"))
	wait.For(t, "t subscribed", func() bool { return b.peers.Stats().LocalTopics == 1 })
	src, err := net.Join("x")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	subject, err := cluster.TopicSubject(cluster.DefaultPrefix, "t")
	if err != nil {
		t.Fatal(err)
	}
	send := func(from string, seq int, data string) {
		t.Helper()
		err := src.Publish(&cluster.Msg{Subject: subject, Data: []byte(data), Header: cluster.Header{
			cluster.HeaderSource: from, cluster.HeaderKind: "text", cluster.HeaderSeq: fmt.Sprint(seq)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	send("x", 1, "one")
	send("x", 5, "five")  // 2, 3 and 4 lost
	send("b", 9, "echo")  // b's own: dropped
	send("x", 1, "again") // x started over
	send("x", 2, "two")
	for _, want := range []string{"one", "five", "again", "two"} {
		if got := r.recv(t); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if st := b.relay.Stats(); st.Drops["bus_lost"] != 3 {
		t.Fatalf("bus_lost %d, want 3", st.Drops["bus_lost"])
	}
}

// TestConfigValidation: the adapter refuses what it cannot work with.
func TestConfigValidation(t *testing.T) {
	rs, _ := relay.NewServer(relay.Config{})
	bus, err := membus.New("n1")
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	for _, cfg := range []cluster.RelayConfig{
		{Relay: rs},
		{Bus: bus},
		{Bus: bus, Relay: rs, UnsubscribeDelay: -1},
		{Bus: bus, Relay: rs, Prefix: "a.*"},
	} {
		if p, err := cluster.NewRelayPeers(cfg); err == nil {
			p.Close()
			t.Errorf("NewRelayPeers(%+v) accepted", cfg)
		}
	}
}

// TestSyncedOnceEveryMemberKnowsTheOthersInterest: a node is synced when it
// has no other member, and not while a member has not exchanged whole
// interests with it (here: a member whose RelayPeers is not running yet,
// so announcements to it fail); once that member runs, both are synced.
func TestSyncedOnceEveryMemberKnowsTheOthersInterest(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	a := newNode(t, net, "a")
	if !a.peers.Synced() {
		t.Fatal("a node alone is not synced")
	}
	a.connect(t, reader("x"))
	// b is a member (its bus joined) but does not take announcements yet.
	rs, err := relay.NewServer(relay.Config{PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	bus, err := net.Join("b")
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, "a to see b", func() bool { return a.peers.Stats().Members == 1 })
	if a.peers.Synced() {
		t.Fatal("a is synced with a member that never answered")
	}
	peers, err := cluster.NewRelayPeers(cluster.RelayConfig{Bus: bus, Relay: rs, AnnounceRetry: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	b := &node{relay: rs, bus: bus, peers: peers}
	t.Cleanup(b.close)
	wait.For(t, "both synced", func() bool { return a.peers.Synced() && b.peers.Synced() })
	if b.peers.RemoteNodes("x") != 1 {
		t.Fatal("b is synced without knowing that a reads x")
	}
}

// TestBarrierWaitsForEveryMembersAcknowledgement: a reader's barrier
// returns once every other member knows the node reads the topic, and does
// not wait for a member that does not answer.
func TestBarrierWaitsForEveryMembersAcknowledgement(t *testing.T) {
	net := newNetwork(t, membus.Options{})
	a, b := newNode(t, net, "a"), newNode(t, net, "b")
	wait.For(t, "both synced", func() bool { return a.peers.Synced() && b.peers.Synced() })
	// A member that never answers announcements (its bus joined, no peers).
	mute, err := net.Join("mute")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Close() })
	wait.For(t, "b to see the mute member", func() bool { return b.peers.Stats().Members == 2 })

	for i := range 50 {
		topic := fmt.Sprintf("x%d", i)
		b.connect(t, reader(topic))
		b.peers.Barrier(t.Context(), topic)
		if a.peers.RemoteNodes(topic) != 1 {
			t.Fatalf("%s: the barrier returned before a knew that b reads it", topic)
		}
	}
	if got := b.peers.Stats().BarrierTimeouts; got != 0 {
		t.Fatalf("%d barriers timed out waiting for a member that does not answer", got)
	}
}
