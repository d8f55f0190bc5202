package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"switchboard/internal/auth"
	"switchboard/internal/cluster/natsbus"
	"switchboard/internal/server"
	"switchboard/internal/servertest"
	"switchboard/internal/servertest/wait"
	"switchboard/pkg/client"
)

// natsNodes starts n whole nodes, each with an embedded nats-server, the
// servers clustered over routes on loopback.
func natsNodes(t *testing.T, n int) []*servertest.Server {
	t.Helper()
	var nodes []*servertest.Server
	var first string
	for i := range n {
		id := string(rune('a' + i))
		opts := natsbus.Options{NodeID: id, RouteListen: "127.0.0.1:0", RouteSecret: "server-test-route-secret",
			HeartbeatInterval: 100 * time.Millisecond, MemberTimeout: time.Second}
		if first != "" {
			opts.Peers = []string{first}
		}
		bus, err := natsbus.Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() }) // after the node's shutdown: an injected bus is the caller's
		if first == "" {
			first = bus.RouteAddr().String()
		}
		nodes = append(nodes, servertest.Start(t, func(c *server.Config, d *server.Deps) { c.NodeID, d.Bus = id, bus }))
	}
	// Ready means joined: membership settled and interests exchanged with
	// every member seen (a node that started late may not be among them).
	for _, node := range nodes {
		wait.For(t, "node "+node.Config.NodeID+" ready with every member", func() bool {
			resp, err := http.Get(node.URL + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK && len(node.Deps.Bus.Members()) == n
		})
	}
	return nodes
}

// TestRelayAcrossNATSNodes: a writer on one node reaches readers on two
// other nodes over real nats-servers, in order, from the first message
// after the readers' handshakes.
func TestRelayAcrossNATSNodes(t *testing.T) {
	nodes := natsNodes(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	readers := []*client.Conn{nodes[1].Dial(t, "lab/cam", auth.ScopeRead), nodes[2].Dial(t, "lab/cam", auth.ScopeRead)}
	writer := nodes[0].Dial(t, "lab/cam", auth.ScopeWrite)
	for i := range 20 {
		if err := writer.Write(ctx, client.Text, []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	for r, reader := range readers {
		for i := range 20 {
			_, data, err := reader.Read(ctx)
			if err != nil || string(data) != string(rune('a'+i)) {
				t.Fatalf("reader %d, message %d: %q, %v", r, i, data, err)
			}
		}
	}
}
