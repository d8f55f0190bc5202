package cluster_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// The profile of the in-memory bus's cost: one writer, fanOutReaders
// readers on one topic, the whole relay path with its goroutines (read
// loop, fan-out, write loops), in three set-ups.
const fanOutReaders = 10

type fanOutSetup struct {
	name string
	// peers installs Peers on rs, if any, and returns a cleanup.
	peers func(t testing.TB, rs *relay.Server) func()
}

var fanOutSetups = []fanOutSetup{
	{"relay-without-peers", func(testing.TB, *relay.Server) func() { return func() {} }},
	{"membus-alone", func(t testing.TB, rs *relay.Server) func() {
		return installPeers(t, rs, nil)
	}},
	{"membus-other-node-reads-another-topic", func(t testing.TB, rs *relay.Server) func() {
		return installPeers(t, rs, []string{"another"})
	}},
}

// installPeers puts rs on a new in-memory network as node "a", with a
// second node "b" reading otherTopics if there are any, and waits until a
// knows of them.
func installPeers(t testing.TB, rs *relay.Server, otherTopics []string) func() {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	peers, stop := installPeersAs(t, net, "a", rs)
	var other *relay.Server
	var otherStop func()
	var otherConns sync.WaitGroup
	if len(otherTopics) > 0 {
		other, _ = relay.NewServer(relay.Config{PingInterval: -1})
		_, otherStop = installPeersAs(t, net, "b", other)
		for _, topic := range otherTopics {
			c := newTestConn(false)
			otherConns.Add(1)
			go func() { defer otherConns.Done(); other.Accept(context.Background(), c, reader(topic)) }()
			wait.For(t, "a to learn that b reads "+topic, func() bool { return peers.RemoteNodes(topic) == 1 })
		}
	}
	return func() {
		if other != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			other.Shutdown(ctx)
			cancel()
			otherConns.Wait()
			otherStop()
		}
		stop()
	}
}

// installPeersAs joins net as node id and connects rs to it; the returned
// func leaves the network.
func installPeersAs(t testing.TB, net *membus.Network, id string, rs *relay.Server) (*cluster.RelayPeers, func()) {
	bus, err := net.Join(id)
	if err != nil {
		t.Fatal(err)
	}
	peers, err := cluster.NewRelayPeers(cluster.RelayConfig{Bus: bus, Relay: rs})
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	return peers, func() { peers.Close(); bus.Close() }
}

// fanOut is one running set-up: send(n) writes n messages and returns once
// every reader has taken them.
type fanOut struct {
	rs      *relay.Server
	writer  *testConn
	readers []*testConn
	conns   sync.WaitGroup
	cleanup func()
	msg     relay.Message
	sent    uint64
}

func startFanOut(t testing.TB, s fanOutSetup) *fanOut {
	rs, err := relay.NewServer(relay.Config{PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	f := &fanOut{rs: rs, cleanup: s.peers(t, rs), writer: newTestConn(false),
		msg: relay.Message{Type: relay.Binary, Data: make([]byte, 1024)}}
	accept := func(c *testConn, info relay.Info) {
		f.conns.Add(1)
		go func() { defer f.conns.Done(); rs.Accept(context.Background(), c, info) }()
	}
	for range fanOutReaders {
		r := newTestConn(false)
		f.readers = append(f.readers, r)
		accept(r, reader("t"))
	}
	accept(f.writer, relay.Info{Topic: "t", CanWrite: true})
	wait.For(t, "connections registered", func() bool { return rs.Stats().Connections == fanOutReaders+1 })
	return f
}

// window is how many messages send writes before it waits for the
// readers: few enough that no send queue overflows (nothing is dropped).
const window = 256

func (f *fanOut) send(t testing.TB, n int) {
	for n > 0 {
		k := min(n, window)
		for range k {
			f.writer.in <- f.msg
		}
		f.sent += uint64(k)
		n -= k
		deadline := time.Now().Add(30 * time.Second)
		for {
			var got uint64
			for _, r := range f.readers {
				got += r.written.Load()
			}
			if got == f.sent*fanOutReaders {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("readers took %d of %d messages (drops %v)", got, f.sent*fanOutReaders, f.rs.Stats().Drops)
			}
			runtime.Gosched()
		}
	}
}

func (f *fanOut) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.rs.Shutdown(ctx)
	f.conns.Wait()
	f.cleanup()
}

// mallocs returns the process's heap allocations so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// TestBusAllocations: with Peers over the in-memory bus, and no other node
// reading the topic (alone, or beside a node that reads another one), a
// relayed message costs no allocation, as without Peers: the whole path,
// read loop to write loops, measured over the process.
func TestBusAllocations(t *testing.T) {
	for _, s := range fanOutSetups {
		t.Run(s.name, func(t *testing.T) {
			f := startFanOut(t, s)
			defer f.stop()
			f.send(t, 2000) // warm up queues and write loops
			const n = 20000
			before := mallocs()
			f.send(t, n)
			perMessage := float64(mallocs()-before) / n
			t.Logf("%s: %.4f allocations per message (%d deliveries each)", s.name, perMessage, fanOutReaders)
			// A few allocations in the whole run are the runtime's and
			// the test's own (timers, a goroutine's first stack); one per
			// message would be 1.0.
			if perMessage > 0.01 {
				t.Fatalf("%.4f allocations per message, want 0", perMessage)
			}
		})
	}
}

// BenchmarkBusFanOut measures one message to fanOutReaders readers through
// the relay in each set-up: the in-memory bus adds no allocation and no
// measurable time while no other node reads the topic. The last set-up,
// where another node does, shows what a forwarded message costs (an op is
// a batch of 1,000 messages).
//
//	go test -run '^$' -bench BusFanOut -benchmem ./internal/cluster
func BenchmarkBusFanOut(b *testing.B) {
	setups := append(fanOutSetups[:len(fanOutSetups):len(fanOutSetups)], fanOutSetup{"membus-other-node-reads-the-topic",
		func(t testing.TB, rs *relay.Server) func() { return installPeers(t, rs, []string{"t"}) }})
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			f := startFanOut(b, s)
			defer f.stop()
			f.send(b, 2000)
			b.ReportAllocs()
			b.ResetTimer()
			const batch = 1000
			for b.Loop() {
				f.send(b, batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
		})
	}
}
