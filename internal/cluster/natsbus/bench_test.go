package natsbus

import (
	"slices"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// relayLike is a relayed message as the relay's bus adapter sends it: 1 KiB
// with its three headers.
func relayLike(subject, node string) *cluster.Msg {
	return &cluster.Msg{Subject: subject, Header: cluster.Header{"Sb-Source": node, "Sb-Kind": "text", "Sb-Seq": "1234567"},
		Data: make([]byte, 1024)}
}

// BenchmarkPublishDeliver measures publish→deliver latency across two
// embedded nodes clustered on loopback: one message in flight at a time;
// p50 and p99 are reported in microseconds.
//
//	go test -run '^$' -bench PublishDeliver -benchtime 5000x ./internal/cluster/natsbus
func BenchmarkPublishDeliver(b *testing.B) {
	bs := startCluster(b, 2, nil)
	const s = "sb.t.bench"
	got := make(chan struct{}, 1)
	sub, err := bs[1].Subscribe(s, func(*cluster.Msg) { got <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	m := relayLike(s, bs[0].NodeID())
	wait.For(b, "the subscription's interest", func() bool {
		bs[0].Publish(m)
		select {
		case <-got:
			return true
		case <-time.After(20 * time.Millisecond):
			return false
		}
	})
	took := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		began := time.Now()
		if err := bs[0].Publish(m); err != nil {
			b.Fatal(err)
		}
		<-got
		took = append(took, time.Since(began))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds())/1e3, "p99-µs")
	if d := sub.Dropped(); d != 0 {
		b.Fatalf("%d dropped", d)
	}
}

// BenchmarkPublish measures Publish alone (with a remote subscriber, so the
// server forwards each message over the route).
func BenchmarkPublish(b *testing.B) {
	bs := startCluster(b, 2, nil)
	const s = "sb.t.bench"
	sub, err := bs[1].Subscribe(s, func(*cluster.Msg) {})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	m := relayLike(s, bs[0].NodeID())
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Data)))
	b.ResetTimer()
	for range b.N {
		if err := bs[0].Publish(m); err != nil {
			b.Fatal(err)
		}
	}
}

// Publish allocates nothing per message in steady state (its NATS message
// and header map are pooled; the client copies into its buffer). The
// count is the process's, so it includes the embedded server's work: the
// node's own subscription (never delivered to it: NoEcho) keeps the
// subject's interest in the server's match cache, whose misses allocate,
// and the server's processMsgResults allocates one 128-byte subject buffer
// per message that matches (nats-server v2.15.3): that is maxPublishAllocs.
func TestPublishAllocations(t *testing.T) {
	bs := startCluster(t, 1, nil)
	const s = "sb.t.alloc"
	sub, err := bs[0].Subscribe(s, func(*cluster.Msg) { t.Error("a message came back to its publisher") })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	m := relayLike(s, bs[0].NodeID())
	if n := testing.AllocsPerRun(1000, func() { bs[0].Publish(m) }); n > maxPublishAllocs && !raceEnabled {
		t.Fatalf("Publish: %v allocations per message, want at most %d", n, maxPublishAllocs)
	}
}

const maxPublishAllocs = 1
