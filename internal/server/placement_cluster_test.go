package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// memCluster starts whole nodes a, b, … on one in-memory bus network, each
// with its own store, and waits until each sees them all.
func memCluster(t *testing.T, n int, configure ...func(*server.Config, *server.Deps)) map[string]*servertest.Server {
	t.Helper()
	network, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*servertest.Server{}
	for i := range n {
		id := string(rune('a' + i))
		bus, err := network.Join(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() }) // after the node's shutdown: an injected bus is the caller's
		nodes[id] = servertest.Start(t, append(configure, func(c *server.Config, d *server.Deps) { c.NodeID, d.Bus = id, bus })...)
	}
	for _, node := range nodes {
		wait.For(t, "node "+node.Config.NodeID+" ready with every member", func() bool {
			return node.Ready() && len(node.Deps.Bus.Members()) == n
		})
	}
	return nodes
}

// routed does what a client behind the shipped load balancer does: the
// access POST on node via, then the websocket GET at the node the code
// names. It returns the connection and that node's id.
func routed(t *testing.T, nodes map[string]*servertest.Server, via *servertest.Server, prefix, topic, tok string) (*client.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	uri, err := client.Access(ctx, via.URL, topic, tok, &client.Options{Prefix: prefix})
	if err != nil {
		t.Fatalf("access %s/%s on %s: %v", prefix, topic, via.Config.NodeID, err)
	}
	home, ok := wire.ParseCode(codeOf(t, uri))
	if !ok || nodes[home] == nil {
		t.Fatalf("the code names node %q", home)
	}
	c, err := client.DialURI(ctx, onNode(t, uri, nodes[home]), nil)
	if err != nil {
		t.Fatalf("websocket %s/%s at %s: %v", prefix, topic, home, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, home
}

// TestATopicsConnectionsMeetAtItsHome: with three nodes, the access
// request for a topic on any node gets a code of the topic's home node (the
// same for every node), so its connections gather there; the homes of many
// topics spread over the nodes; the stats topic stays on the node asked.
func TestATopicsConnectionsMeetAtItsHome(t *testing.T) {
	nodes := memCluster(t, 3)
	homes := map[string]int{}
	for i := range 30 {
		topic := fmt.Sprintf("lab%d/cam", i)
		var home string
		for _, via := range nodes {
			_, at := routed(t, nodes, via, wire.PrefixSession, topic, via.Token(t, topic, auth.ScopeRead))
			if home == "" {
				home = at
			}
			if at != home {
				t.Fatalf("%s: codes at %s and at %s", topic, home, at)
			}
		}
		wait.For(t, topic+"'s 3 connections at its home "+home, func() bool { return nodes[home].TopicConns(topic) == 3 })
		homes[home]++
	}
	if len(homes) != 3 {
		t.Errorf("the homes of 30 topics: %v, want all three nodes", homes)
	}
	for id, via := range nodes {
		if _, at := routed(t, nodes, via, wire.PrefixSession, "stats", via.Token(t, "stats", auth.ScopeStats)); at != id {
			t.Errorf("node %s's stats topic: code of %s", id, at)
		}
	}
}

// TestShellAcrossNodes: a shell host and its user reach the cluster through
// different nodes; both are placed at the topic's home, where the session
// pairs them and carries bytes both ways.
func TestShellAcrossNodes(t *testing.T) {
	nodes := memCluster(t, 2)
	shellToken := func(via *servertest.Server, scope string) string {
		c := via.Claims("ssh", scope)
		c.Prefix = wire.PrefixShell
		return via.Sign(t, c)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ctl, home := routed(t, nodes, nodes["a"], wire.PrefixShell, "ssh", shellToken(nodes["a"], auth.ScopeHost))
	other := nodes["a"]
	if home == "a" {
		other = nodes["b"]
	}
	wait.For(t, "the host seen by the other node", func() bool { return other.Relay().ReadElsewhere("shell-host:ssh") })

	users := make(chan *client.Conn, 1)
	go func() {
		u, _ := routed(t, nodes, other, wire.PrefixShell, "ssh", shellToken(other, auth.ScopeClient))
		users <- u
	}()
	_, data, err := ctl.Read(ctx)
	if err != nil {
		t.Fatalf("host control: %v", err)
	}
	var m struct{ Type, Session, URI string }
	if err := json.Unmarshal(data, &m); err != nil || m.Type != "connect" {
		t.Fatalf("connect message %s: %v", data, err)
	}
	host, err := client.DialURI(ctx, m.URI, nil)
	if err != nil {
		t.Fatalf("host dials the session: %v", err)
	}
	defer host.CloseNow()
	user := <-users
	if err := user.Write(ctx, client.Binary, []byte("ls\n")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := host.Read(ctx); err != nil || string(data) != "ls\n" {
		t.Fatalf("the host read %q, %v", data, err)
	}
	if err := host.Write(ctx, client.Binary, []byte("file\n")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := user.Read(ctx); err != nil || string(data) != "file\n" {
		t.Fatalf("the user read %q, %v", data, err)
	}
}
