package control

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestClusterReportHealth: a report sums the nodes that answered; a member
// that does not answer, a disconnected bus and a member that went down each
// make it degraded, with a problem naming why; healed, it is ok again.
func TestClusterReportHealth(t *testing.T) {
	network, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	busA, _ := network.Join("a")
	busB, _ := network.Join("b")
	defer busA.Close()
	defer busB.Close()
	var disconnected atomic.Bool
	a, err := NewClusterStatus(ClusterConfig{Bus: busA, Relay: relayWithConns(t, 3), Timeout: 100 * time.Millisecond,
		BusHealth: func() BusHealth { return BusHealth{Kind: "nats", Connected: !disconnected.Load()} }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	// b answers with a summary of its own, then stops answering.
	answer := make(chan bool, 1)
	answer <- true
	bSummary, _ := json.Marshal(NodeSummary{Node: "b", State: StateDraining, Counts: Counts{Connections: 2, Readers: 1, Writers: 1,
		Drops: map[string]uint64{relay.DropQueueHead.String(): 5}}})
	bx, err := cluster.NewStatusExchange(cluster.StatusConfig{Bus: busB, Local: func() ([]byte, error) {
		select {
		case <-answer:
			return bSummary, nil
		default:
			return nil, context.DeadlineExceeded // no answer: a's request times out
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer bx.Close()

	r := a.Report(context.Background())
	if r.Health != HealthOK || len(r.Problems) != 0 || r.Members != 2 || len(r.Nodes) != 2 || !a.OthersSeen() {
		t.Fatalf("healthy report: %+v", r)
	}
	if tot := r.Totals; tot.Connections != 5 || tot.Readers != 4 || tot.Writers != 1 || tot.Drops[relay.DropQueueHead.String()] != 5 ||
		len(tot.Drops) != len(relay.DropReasons()) {
		t.Fatalf("totals: %+v", tot)
	}
	if b := r.Nodes[1]; b.Node != "b" || b.Status != NodeUp || b.Summary == nil || b.Summary.State != StateDraining {
		t.Fatalf("b: %+v", b)
	}

	r = a.Report(context.Background())
	if r.Health != HealthDegraded || len(r.Problems) != 1 || r.Problems[0].Code != ProblemMemberNotAnswering || r.Problems[0].Node != "b" ||
		r.Nodes[1].Status != NodeNotAnswering || r.Nodes[1].Error == "" || r.Totals.Connections != 3 {
		t.Fatalf("b not answering: %+v", r)
	}

	disconnected.Store(true)
	if health, problems := a.Health(); health != HealthDegraded || len(problems) != 1 || problems[0].Code != ProblemBusDisconnected {
		t.Fatalf("bus disconnected: %s %+v", health, problems)
	}
	disconnected.Store(false)

	bx.Close()
	busB.Close()
	wait.For(t, "b down", func() bool {
		h, p := a.Health()
		return h == HealthDegraded && len(p) == 1 && p[0].Code == ProblemMemberDown
	})
	r = a.Report(context.Background())
	if r.Members != 1 || len(r.Nodes) != 2 || r.Nodes[1].Status != NodeDown || r.Nodes[1].DownSince == nil {
		t.Fatalf("b down: %+v", r)
	}
	busB2, _ := network.Join("b")
	defer busB2.Close()
	wait.For(t, "healthy again", func() bool { h, _ := a.Health(); return h == HealthOK })
}
