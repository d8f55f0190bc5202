package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// statusNodes runs nodes on one in-memory bus network.
type statusNodes struct {
	t       *testing.T
	network *membus.Network
}

func (n *statusNodes) start(id string) (*servertest.Server, cluster.Bus) {
	bus, err := n.network.Join(id)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { bus.Close() }) // after the node's shutdown: an injected bus is the caller's
	return servertest.Start(n.t, func(c *server.Config, d *server.Deps) { c.NodeID, d.Bus = id, bus }), bus
}

// getStatus fetches path from s with a relay:stats token and returns the
// status, the health header and the body.
func getStatus(t *testing.T, s *servertest.Server, path string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+s.Token(t, "stats", auth.ScopeStats))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(control.HeaderHealth), b
}

func clusterReport(t *testing.T, s *servertest.Server) control.ClusterReport {
	t.Helper()
	st, health, b := getStatus(t, s, "/status?node=all")
	var r control.ClusterReport
	if st != 200 || json.Unmarshal(b, &r) != nil || health != r.Health {
		t.Fatalf("/status?node=all: %d (health header %q) %s", st, health, b)
	}
	return r
}

func nodeByID(r control.ClusterReport, id string) *control.NodeReport {
	for i := range r.Nodes {
		if r.Nodes[i].Node == id {
			return &r.Nodes[i]
		}
	}
	return nil
}

// readClusterSection reads the stats topic until a cluster section
// satisfies ok, or fails at the deadline.
func readClusterSection(t *testing.T, stats *client.Conn, within time.Duration, what string, ok func(control.ClusterReport) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	for {
		_, data, err := stats.Read(ctx)
		if err != nil {
			t.Fatalf("stats topic: %s not seen within %v: %v", what, within, err)
		}
		if !strings.HasPrefix(string(data), "{") {
			continue // a part of the connections report
		}
		var sec struct {
			Cluster control.ClusterReport `json:"cluster"`
		}
		if err := json.Unmarshal(data, &sec); err != nil {
			t.Fatalf("stats topic: a message that is neither a report part nor a cluster section: %s", data)
		}
		if ok(sec.Cluster) {
			return
		}
	}
}

// TestStatusShowsEveryNode (issue 14 item 4): three nodes on one bus.
// /status?node=all on any node lists every node with its counts and the
// totals; /metrics exports the membership; the stats topic carries the
// cluster section; the per-connection /status stays node-local and keeps
// its format. A node that goes down is marked down at once everywhere (and
// the cluster degraded), and healthy again when it comes back.
func TestStatusShowsEveryNode(t *testing.T) {
	network, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := &statusNodes{t: t, network: network}
	a, _ := nodes.start("a")
	b, _ := nodes.start("b")
	c, cBus := nodes.start("c")
	for _, n := range []*servertest.Server{a, b, c} {
		wait.For(t, n.Config.NodeID+" ready", n.Ready)
	}
	// One reader on a, a writer and a reader on b, a writer on c.
	a.Dial(t, "lab/cam", auth.ScopeRead)
	b.Dial(t, "lab/cam", auth.ScopeRead)
	b.Dial(t, "lab/cam", auth.ScopeWrite)
	c.Dial(t, "lab/other", auth.ScopeWrite)
	stats := a.Dial(t, "stats", auth.ScopeStats) // a's stats reader: one more reader on a
	wait.For(t, "connections registered", func() bool {
		return a.Relay().Stats().Connections == 2 && b.Relay().Stats().Connections == 2 && c.Relay().Stats().Connections == 1
	})

	for _, from := range []*servertest.Server{a, c} {
		r := clusterReport(t, from)
		if r.Node != from.Config.NodeID || r.Health != control.HealthOK || len(r.Problems) != 0 || r.Members != 3 || len(r.Nodes) != 3 {
			t.Fatalf("report from %s: %+v", from.Config.NodeID, r)
		}
		want := map[string][3]int{"a": {2, 2, 0}, "b": {2, 1, 1}, "c": {1, 0, 1}} // connections, readers, writers
		for id, w := range want {
			n := nodeByID(r, id)
			if n == nil || n.Status != control.NodeUp || n.Summary == nil || n.Summary.Node != id || n.Summary.State != control.StateReady ||
				n.Summary.Connections != w[0] || n.Summary.Readers != w[1] || n.Summary.Writers != w[2] || n.Summary.Bus.Kind != "memory" {
				t.Fatalf("report from %s, node %s: %+v %+v", from.Config.NodeID, id, n, n.Summary)
			}
		}
		if tot := r.Totals; tot.Connections != 5 || tot.Readers != 3 || tot.Writers != 2 || len(tot.Drops) == 0 {
			t.Fatalf("totals from %s: %+v", from.Config.NodeID, tot)
		}
	}

	// The per-connection report is this node's, in the practable format.
	st, health, body := getStatus(t, b, "/status")
	var conns []control.ConnReport
	if st != 200 || health != control.HealthOK || json.Unmarshal(body, &conns) != nil || len(conns) != 2 {
		t.Fatalf("/status on b: %d %q %s", st, health, body)
	}
	if st, _, body := getStatus(t, a, "/status?node=b"); st != 400 || !strings.Contains(string(body), "invalid_parameter") {
		t.Fatalf("/status?node=b: %d %s", st, body)
	}

	_, _, metrics := getStatus(t, a, "/metrics")
	for _, m := range []string{"switchboard_cluster_members 3", `switchboard_cluster_member_up{node="c"} 1`,
		"switchboard_cluster_bus_connected 1", "switchboard_cluster_degraded 0"} {
		if !strings.Contains(string(metrics), m+"\n") {
			t.Errorf("metrics lack %q", m)
		}
	}

	readClusterSection(t, stats, 10*time.Second, "three nodes up", func(r control.ClusterReport) bool {
		return r.Members == 3 && r.Totals.Connections == 5
	})

	// c goes down: everywhere within 3 s (here at once: the in-memory
	// bus reports a departure immediately).
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	cBus.Close()
	down := time.Now()
	readClusterSection(t, stats, 3*time.Second, "c down on the stats topic", func(r control.ClusterReport) bool {
		n := nodeByID(r, "c")
		return r.Members == 2 && n != nil && n.Status == control.NodeDown && r.Health == control.HealthDegraded
	})
	if d := time.Since(down); d > 3*time.Second {
		t.Fatalf("c reported down after %v", d)
	}
	for _, from := range []*servertest.Server{a, b} {
		r := clusterReport(t, from)
		n := nodeByID(r, "c")
		if r.Health != control.HealthDegraded || len(r.Problems) != 1 || r.Problems[0].Code != control.ProblemMemberDown || r.Problems[0].Node != "c" ||
			n == nil || n.Status != control.NodeDown || n.DownSince == nil || n.Summary != nil || r.Totals.Connections != 4 {
			t.Fatalf("report from %s after c went down: %+v", from.Config.NodeID, r)
		}
	}
	if _, health, _ := getStatus(t, a, "/status"); health != control.HealthDegraded {
		t.Fatalf("/status health header with c down: %q", health)
	}
	_, _, metrics = getStatus(t, a, "/metrics")
	for _, m := range []string{"switchboard_cluster_members 2", `switchboard_cluster_member_up{node="c"} 0`, "switchboard_cluster_degraded 1"} {
		if !strings.Contains(string(metrics), m+"\n") {
			t.Errorf("metrics with c down lack %q", m)
		}
	}

	// c comes back: healthy again.
	c2, _ := nodes.start("c")
	wait.For(t, "c back", c2.Ready)
	wait.For(t, "the cluster healthy again on a", func() bool {
		r := clusterReport(t, a)
		n := nodeByID(r, "c")
		return r.Health == control.HealthOK && r.Members == 3 && n != nil && n.Status == control.NodeUp
	})
	// The report sent when c joined may have found it not answering yet
	// (its server starts after its bus joins); the next one, within
	// --stats-every (5 s), has it.
	readClusterSection(t, stats, 10*time.Second, "c back on the stats topic", func(r control.ClusterReport) bool {
		return r.Members == 3 && r.Health == control.HealthOK
	})
}

// TestStatsTopicOfALoneNodeIsUnchanged: a node on its own (on a bus of its
// own, as `switchboard serve` without cluster flags runs) publishes only
// the practable-format arrays on the stats topic; its /status?node=all
// lists itself.
func TestStatsTopicOfALoneNodeIsUnchanged(t *testing.T) {
	bus, err := membus.New("n1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	s := servertest.Start(t, func(c *server.Config, d *server.Deps) { c.StatsEvery = 50 * time.Millisecond; d.Bus = bus })
	stats := s.Dial(t, "stats", auth.ScopeStats)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for range 5 { // a few reports, each one message
		_, data, err := stats.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var conns []control.ConnReport
		if err := json.Unmarshal(data, &conns); err != nil {
			t.Fatalf("a lone node's stats message is not a report array: %s", data)
		}
	}
	r := clusterReport(t, s)
	if r.Members != 1 || len(r.Nodes) != 1 || r.Nodes[0].Node != "n1" || r.Health != control.HealthOK || r.Totals.Connections != 1 {
		t.Fatalf("a lone node's cluster report: %+v", r)
	}
}
