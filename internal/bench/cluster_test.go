package bench

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
)

// startTestCluster runs three in-process nodes clustered over embedded
// NATS on one fresh PostgreSQL (servertest.StartCluster; skipped without
// PostgreSQL unless SWITCHBOARD_TEST_STRICT=1), with the limits lifted for
// load generators. Each node is its own tokens' audience.
func startTestCluster(t *testing.T) (ClusterTarget, []*servertest.Server) {
	t.Helper()
	nodes := servertest.StartCluster(t, 3, func(_ int, c *server.Config, _ *server.Deps) { c.Limits = loadGeneratorLimits })
	tgt := ClusterTarget{Secret: servertest.Secret}
	for _, n := range nodes {
		tgt.Nodes = append(tgt.Nodes, ClusterNode{ID: n.Config.NodeID, URL: n.URL, Audience: n.URL})
	}
	return tgt, nodes
}

// TestClusterScenarios runs each cluster scenario at a tiny size on one
// three-node cluster.
func TestClusterScenarios(t *testing.T) {
	tgt, nodes := startTestCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("fanout", func(t *testing.T) {
		res, err := ClusterFanout(ctx, tgt, ClusterFanoutOptions{Readers: 7, Size: 100, Rate: 200,
			Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		// Readers 0, 3, 6 on n1 (the writer's), 1, 4 on n2, 2, 5 on n3.
		if r := res.ReadersPerNode; r["n1"] != 3 || r["n2"] != 2 || r["n3"] != 2 {
			t.Errorf("readers per node %v, want n1:3 n2:2 n3:2", r)
		}
		if res.SameNode.Readers != 3 || res.CrossNode.Readers != 4 {
			t.Errorf("same node %d readers, other nodes %d: want 3 and 4", res.SameNode.Readers, res.CrossNode.Readers)
		}
		// 200 msg/s for 300 ms: about 60 messages, each to every reader.
		a := res.All
		if a.Sent < 59 || a.Sent > 61 || a.Drops != 0 || a.Incomplete != 0 || a.Reordered != 0 {
			t.Fatalf("sent %d, drops %d, incomplete %d, reordered %d: want about 60 sent, nothing lost (%s)",
				a.Sent, a.Drops, a.Incomplete, a.Reordered, a.FirstError)
		}
		if res.SameNode.Delivered != 3*a.Sent || res.CrossNode.Delivered != 4*a.Sent || res.SameNode.Drops+res.CrossNode.Drops != 0 {
			t.Errorf("delivered same node %d, other nodes %d of %d each: want all", res.SameNode.Delivered, res.CrossNode.Delivered, a.Sent)
		}
		s, x := res.SameNode.LatencyUS, res.CrossNode.LatencyUS
		if s == nil || x == nil || res.AddedLatencyUS == nil || s.P50 <= 0 || x.P50 <= 0 || x.Max > 10e6 {
			t.Fatalf("latencies same node %+v, other nodes %+v, added %+v", s, x, res.AddedLatencyUS)
		}
		if res.AddedLatencyUS.P99 != x.P99-s.P99 {
			t.Errorf("added p99 %v, want %v - %v", res.AddedLatencyUS.P99, x.P99, s.P99)
		}
	})

	t.Run("fanout unpaced", func(t *testing.T) {
		res, err := ClusterFanout(ctx, tgt, ClusterFanoutOptions{Topic: "bench/unpaced", Readers: 4, Size: 100,
			Duration: 200 * time.Millisecond, Warmup: -1})
		if err != nil {
			t.Fatal(err)
		}
		if res.All.Sent == 0 || res.CrossNode.Delivered == 0 || res.All.DeliveredPerSec <= 0 {
			t.Fatalf("sent %d, delivered to other nodes %d, %v/s", res.All.Sent, res.CrossNode.Delivered, res.All.DeliveredPerSec)
		}
		if res.AddedLatencyUS != nil || res.SameNode.LatencyUS != nil {
			t.Error("per-group latency reported for an unpaced run")
		}
	})

	t.Run("first message", func(t *testing.T) {
		res, err := FirstMessage(ctx, tgt, FirstMessageOptions{Rounds: 40, Parallel: 4, Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		// Every round either delivered or lost; losses are the relay's
		// (issue 14's number is 0 in 10,000), not this test's to judge.
		if res.Delivered+res.Lost != 40 || res.Delivered == 0 || res.Errors != 0 {
			t.Fatalf("delivered %d, lost %d %v, errors %d (%s): want 40 rounds run", res.Delivered, res.Lost, res.LostTopics, res.Errors, res.FirstError)
		}
		if res.Lost > 0 {
			t.Logf("%d of 40 first messages lost: %v", res.Lost, res.LostTopics)
		}
		if res.HandshakeUS.P50 <= 0 || res.DeliveryUS.P50 <= 0 {
			t.Errorf("handshake %+v, delivery %+v", res.HandshakeUS, res.DeliveryUS)
		}
		if len(res.ReaderNodes) != 2 || res.WriterNode != "n1" {
			t.Errorf("writer on %s, readers on %v: want n1, and n2 and n3", res.WriterNode, res.ReaderNodes)
		}
	})

	t.Run("first message detects a loss", func(t *testing.T) {
		// Readers on a node that is not in the cluster (a single node of
		// its own on the same secret) never get the writer's message.
		lone := servertest.Start(t, func(c *server.Config, _ *server.Deps) { c.Limits = loadGeneratorLimits; c.NodeID = "lone" })
		split := ClusterTarget{Secret: tgt.Secret, Nodes: []ClusterNode{tgt.Nodes[0], {ID: "lone", URL: lone.URL, Audience: lone.URL}}}
		res, err := FirstMessage(ctx, split, FirstMessageOptions{Rounds: 2, Parallel: 2, Timeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.Lost != 2 || res.Delivered != 0 || len(res.LostTopics) != 2 {
			t.Fatalf("lost %d %v, delivered %d, errors %d (%s): want both lost", res.Lost, res.LostTopics, res.Delivered, res.Errors, res.FirstError)
		}
	})

	t.Run("deny", func(t *testing.T) {
		res, err := ClusterDeny(ctx, tgt, DenyOptions{Conns: 30, Denied: 9, Topics: 3})
		if err != nil {
			t.Fatal(err)
		}
		if res.Closed4003 != 9 || res.NotClosed != 0 || res.WronglyClosed != 0 {
			t.Fatalf("closed with 4003 %d of 9, not closed %d, others closed %d", res.Closed4003, res.NotClosed, res.WronglyClosed)
		}
		for _, id := range []string{"n1", "n2", "n3"} {
			if l := res.DisconnectByNodeMS[id]; l.Max <= 0 || l.Max > 10_000 {
				t.Errorf("disconnects on %s: %+v", id, l)
			}
		}
	})

	t.Run("foreign code", func(t *testing.T) {
		res, err := ForeignCode(ctx, tgt, ForeignCodeOptions{Rounds: 40})
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 0 || res.Local.Handshakes != 20 || res.Foreign.Handshakes != 20 {
			t.Fatalf("local %d, foreign %d, errors %d (%s): want 20, 20, 0", res.Local.Handshakes, res.Foreign.Handshakes, res.Errors, res.FirstError)
		}
		l, f := res.Local, res.Foreign
		if l.GetUS.P50 <= 0 || f.GetUS.P50 <= 0 || l.HandshakeUS.P50 < l.GetUS.P50 || f.HandshakeUS.P50 < f.GetUS.P50 {
			t.Errorf("local %+v, foreign %+v", l, f)
		}
		if res.AddedUS.P99 != f.HandshakeUS.P99-l.HandshakeUS.P99 {
			t.Errorf("added p99 %v", res.AddedUS.P99)
		}
	})

	// Last: it takes n2 away. In process, the "kill" is a shutdown without
	// a lame duck (the clients see 1001 instead of a reset connection).
	t.Run("kill", func(t *testing.T) {
		res, err := ClusterKill(ctx, tgt, ClusterKillOptions{Clients: 30, Topics: 5, Probes: 2, Timeout: 20 * time.Second,
			Kill: func(i int) error {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				return nodes[i].Shutdown(sctx)
			}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Victim != "n2" || res.Reconnected != 30 || res.NotReconnected != 0 || res.ReconnectedTo["n2"] != 0 {
			t.Fatalf("victim %s: reconnected %d %v, not %d (%s): want all 30 to n1 and n3", res.Victim, res.Reconnected, res.ReconnectedTo, res.NotReconnected, res.FirstError)
		}
		if res.ReconnectMS.Max <= 0 || res.Attempts < 30 || res.AccessOK+res.AccessFailed == 0 {
			t.Errorf("reconnect %+v, attempts %d, survivors' sessions %d ok %d failed", res.ReconnectMS, res.Attempts, res.AccessOK, res.AccessFailed)
		}
	})
}
