package servertest

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster/natsbus"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
	"github.com/switchboard-hub/switchboard/internal/store/postgres"
)

// routeSecret authenticates the routes between StartCluster's nodes.
const routeSecret = "servertest cluster route secret"

// clusterReadyTimeout bounds how long StartCluster waits for its nodes to
// join: the membership settles in 2 s (natsbus's member timeout), and
// routes to a peer that was not listening yet are retried after 1 s.
const clusterReadyTimeout = 30 * time.Second

// StartCluster runs n nodes (n1, n2, …) clustered as `switchboard serve
// --cluster-listen` runs them: each with an embedded nats-server whose
// routes listen on a free loopback port (the first node's is the others'
// peer; gossip meshes them), all on one fresh PostgreSQL database (pgtest;
// each node with its own connection pool), each with its own data and
// results directories. configure functions run for each node (i from 0)
// after the cluster's own settings. It returns once every node answers
// /readyz (it has joined: membership settled, interests exchanged) and sees
// all n members. Tokens are per node (each node's URL is its audience);
// shutdown at the end of the test, nodes first, then their buses.
func StartCluster(t testing.TB, n int, configure ...func(i int, cfg *server.Config, deps *server.Deps)) []*Server {
	t.Helper()
	dbURL := pgtest.Start(t)
	var nodes []*Server
	var firstRoute string
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		opts := natsbus.Options{NodeID: id, RouteListen: "127.0.0.1:0", RouteSecret: routeSecret}
		if firstRoute != "" {
			opts.Peers = []string{firstRoute}
		}
		bus, err := natsbus.Open(opts)
		if err != nil {
			t.Fatalf("servertest: node %s: %v", id, err)
		}
		t.Cleanup(func() { bus.Close() }) // after the node's shutdown: an injected bus is the caller's
		if firstRoute == "" {
			firstRoute = bus.RouteAddr().String()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		db, err := postgres.Open(ctx, dbURL, postgres.Options{})
		cancel()
		if err != nil {
			t.Fatalf("servertest: node %s: %v", id, err)
		}
		t.Cleanup(func() { db.Close() })
		nodes = append(nodes, Start(t, func(cfg *server.Config, deps *server.Deps) {
			cfg.NodeID, deps.Bus, deps.Store = id, bus, db
			for _, f := range configure {
				f(i, cfg, deps)
			}
		}))
	}
	for _, node := range nodes {
		wait.Within(t, clusterReadyTimeout, "node "+node.Config.NodeID+" joined with every member", func() bool {
			return node.Ready() && len(node.Deps.Bus.Members()) == n
		})
	}
	return nodes
}

// Ready reports whether the node's /readyz answers 200.
func (s *Server) Ready() bool {
	resp, err := http.Get(s.URL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
