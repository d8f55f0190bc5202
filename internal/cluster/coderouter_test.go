package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// codeNode is one node's code store and router on a shared network.
type codeNode struct {
	bus    *membus.Bus
	codes  *access.MemoryCodeStore
	router *cluster.CodeRouter
}

func newCodeNode(t *testing.T, net *membus.Network, id string) *codeNode {
	t.Helper()
	bus, err := net.Join(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	codes := access.NewMemoryCodeStore(0, nil)
	r, err := cluster.NewCodeRouter(cluster.CodeRouterConfig{Bus: bus, Codes: codes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &codeNode{bus: bus, codes: codes, router: r}
}

// fullGrant sets every field of a grant, so that a field the bus forgets
// shows.
func fullGrant() access.Grant {
	return access.Grant{Topic: "lab/cam", Prefix: "session", CanRead: true, CanWrite: true,
		Identity:    relay.Identity{Subject: "alice", BookingID: "b1", TokenID: "t1"},
		TokenExpiry: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), Scopes: []string{"read", "write"},
		System: true, Role: "host", Session: "s1", Owner: "digest", Labels: []string{"role=server"}, Peer: true, Local: true}
}

func TestCodeRouterTakesAForeignCodeOnce(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := newCodeNode(t, net, "a"), newCodeNode(t, net, "b"), newCodeNode(t, net, "c")
	// Every exported field of Grant is set, so a new field that the bus
	// does not carry fails here.
	g := fullGrant()
	v := reflect.ValueOf(g)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("fullGrant leaves %s unset", v.Type().Field(i).Name)
		}
	}
	code := wire.NewCode("a")
	expires := time.Now().Add(30 * time.Second).Round(0)
	if err := a.codes.Put(code, g, expires); err != nil {
		t.Fatal(err)
	}

	// Two other nodes race for it: exactly one gets it, and gets it whole.
	type result struct {
		g       access.Grant
		expires time.Time
		ok      bool
		err     error
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i, n := range []*codeNode{b, c} {
		wg.Go(func() {
			r := &results[i]
			r.g, r.expires, r.ok, r.err = n.router.Take(t.Context(), "a", code)
		})
	}
	wg.Wait()
	won := 0
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("take: %v", r.err)
		}
		if r.ok {
			won++
			if !reflect.DeepEqual(r.g, g) || !r.expires.Equal(expires) {
				t.Errorf("took %+v until %v, want %+v until %v", r.g, r.expires, g, expires)
			}
		}
	}
	if won != 1 {
		t.Fatalf("%d of 2 concurrent takes of one code succeeded, want 1", won)
	}
	if _, _, ok := a.codes.Take(code); ok {
		t.Fatal("the owner still holds a code another node took")
	}
	if _, _, ok, err := b.router.Take(t.Context(), "a", "unknown"); ok || err != nil {
		t.Fatalf("an unknown code: ok %v, err %v", ok, err)
	}
}

func TestCodeRouterOwnerGoneFailsAtOnce(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := newCodeNode(t, net, "b")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, _, ok, err := b.router.Take(ctx, "gone", wire.NewCode("gone"))
	if ok || !errors.Is(err, access.ErrCodeNodeGone) {
		t.Fatalf("a code of a node that is gone: ok %v, err %v; want access.ErrCodeNodeGone", ok, err)
	}
	// No responders is an answer, not a timeout: well below the context's
	// 10 s even on a loaded machine.
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("a gone owner took %v to refuse", waited)
	}
	// A node id that is no subject token never reaches the bus.
	if _, _, _, err := b.router.Take(ctx, "a b", "x"); !errors.Is(err, cluster.ErrInvalidSubject) {
		t.Fatalf("a node id with a space: %v", err)
	}
}

// TestCodeRouterPlacesTopicsAtOneHome: every node names the same home for
// a topic, the homes spread over the members, a member's leaving moves only
// the topics it was home to, and a home issues codes that name it, taken
// from its own store.
func TestCodeRouterPlacesTopicsAtOneHome(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*codeNode{"a": newCodeNode(t, net, "a"), "b": newCodeNode(t, net, "b"), "c": newCodeNode(t, net, "c")}
	wait.For(t, "every member seen", func() bool {
		for _, n := range nodes {
			if len(n.bus.Members()) != 3 {
				return false
			}
		}
		return true
	})
	const topics = 300
	homes := map[string]string{}
	perNode := map[string]int{}
	for i := range topics {
		topic := fmt.Sprintf("lab%d/cam", i)
		home := nodes["a"].router.Home("session", topic)
		for id, n := range nodes {
			if h := n.router.Home("session", topic); h != home {
				t.Fatalf("%s: node %s says home %s, node a %s", topic, id, h, home)
			}
		}
		homes[topic] = home
		perNode[home]++
	}
	for id := range nodes {
		if perNode[id] < topics/6 { // an even share is 100
			t.Errorf("node %s is home to %d of %d topics: %v", id, perNode[id], topics, perNode)
		}
	}

	// A code for a topic, issued at its home from another node.
	var topic, home string
	for tp, h := range homes {
		if h != "a" {
			topic, home = tp, h
			break
		}
	}
	g := fullGrant()
	g.Topic = topic
	expires := time.Now().Add(30 * time.Second).Round(0)
	code, err := nodes["a"].router.IssueAt(t.Context(), home, g, expires)
	if err != nil {
		t.Fatal(err)
	}
	if issuer, ok := wire.ParseCode(code); !ok || issuer != home {
		t.Fatalf("the code %q does not name the home %s", code, home)
	}
	got, gotExpires, ok := nodes[home].codes.Take(code)
	if !ok || !reflect.DeepEqual(got, g) || !gotExpires.Equal(expires) {
		t.Fatalf("the home holds %+v until %v (%v), want %+v until %v", got, gotExpires, ok, g, expires)
	}

	// The home refuses as its store would: too many codes of one owner.
	g.Owner = "greedy"
	var refused error
	for range access.DefaultCodesPerOwner + 1 {
		if _, refused = nodes["a"].router.IssueAt(t.Context(), home, g, expires); refused != nil {
			break
		}
	}
	if !errors.Is(refused, access.ErrTooManyForOwner) {
		t.Fatalf("past the owner's limit at the home: %v, want access.ErrTooManyForOwner", refused)
	}

	// c leaves: only the topics whose home it was move.
	nodes["c"].router.Close()
	nodes["c"].bus.Close()
	wait.For(t, "a to see c gone", func() bool { return len(nodes["a"].bus.Members()) == 2 })
	for topic, was := range homes {
		now := nodes["a"].router.Home("session", topic)
		if was != "c" && now != was {
			t.Fatalf("%s moved from %s to %s when c left", topic, was, now)
		}
		if now == "c" {
			t.Fatalf("%s is still at c, which left", topic)
		}
	}
}

// TestALeavingNodeIsNoTopicsHome: once a node leaves (shuts down), no node
// names it a topic's home, it refuses to issue codes for others, and the
// codes it holds can still be taken.
func TestALeavingNodeIsNoTopicsHome(t *testing.T) {
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := newCodeNode(t, net, "a"), newCodeNode(t, net, "b")
	wait.For(t, "both members seen", func() bool { return len(a.bus.Members()) == 2 && len(b.bus.Members()) == 2 })
	var topicOfA string
	for i := range 100 {
		if tp := fmt.Sprintf("t%d", i); a.router.Home("session", tp) == "a" {
			topicOfA = tp
			break
		}
	}
	if topicOfA == "" {
		t.Fatal("a is home to none of 100 topics")
	}
	held := wire.NewCode("a")
	if err := a.codes.Put(held, fullGrant(), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}

	a.router.Leave()
	if home := a.router.Home("session", topicOfA); home != "b" {
		t.Fatalf("the leaving node names %s the home of %s, want b", home, topicOfA)
	}
	if _, err := b.router.IssueAt(t.Context(), "a", fullGrant(), time.Now().Add(time.Minute)); err == nil {
		t.Fatal("a leaving node issued a code for another")
	}
	if _, _, ok, err := b.router.Take(t.Context(), "a", held); !ok || err != nil {
		t.Fatalf("a code the leaving node holds: ok %v, err %v", ok, err)
	}
}
