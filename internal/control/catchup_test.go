package control_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// testPoll is the catch-up period of the tests' nodes.
const testPoll = 50 * time.Millisecond

// sharedStore is one SQLite store for several nodes, closed after them.
func sharedStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "shared.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // registered first: runs after the nodes' cleanups
	return st
}

func newNetwork(t *testing.T) *membus.Network {
	t.Helper()
	net, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// TestRevocationLostOnTheBusIsCaughtUpFromTheStore: two nodes share a
// store; node a's bus loses every revocation event it publishes. A booking
// denied on a still closes b's connection of it with 4003, within the
// issue's 2 s (the poll period here is 50 ms), from the store's change log;
// another booking's connection stays; the allow that follows reaches b the
// same way, and both nodes end at the store's revision.
func TestRevocationLostOnTheBusIsCaughtUpFromTheStore(t *testing.T) {
	net, st := newNetwork(t), sharedStore(t)
	a := startNodeWith(t, net, "a", nodeOptions{revocations: st, poll: testPoll, loseRevocations: true})
	b := startNodeWith(t, net, "b", nodeOptions{revocations: st, poll: testPoll})

	doomed := b.dial(t, wire.PrefixSession, "t1", b.token(t, wire.PrefixSession, "t1", "alice", "b1", auth.ScopeRead))
	b.dial(t, wire.PrefixSession, "t1", b.token(t, wire.PrefixSession, "t1", "bob", "b2", auth.ScopeRead))
	wait.For(t, "both readers on b's relay", func() bool { return b.hasBooking("b1") && b.hasBooking("b2") })

	admin := a.token(t, "", "", "operator", "", auth.ScopeAdmin)
	exp := time.Now().Add(time.Hour).Unix()
	denied := time.Now()
	if status := a.api(t, "POST", fmt.Sprintf("/bids/deny?bid=b1&exp=%d", exp), admin); status != http.StatusNoContent {
		t.Fatalf("deny on a: %d", status)
	}
	if code := readUntilClosed(t, "b's reader of b1", doomed); code != wire.CloseDenied {
		t.Fatalf("b's reader of b1 closed with %d, want %d", code, wire.CloseDenied)
	}
	if took := time.Since(denied); took > 2*time.Second {
		t.Fatalf("b closed the denied booking's connection %v after the deny, want within 2 s", took)
	}
	if a.lossy.lost.Load() != 1 {
		t.Fatalf("a's bus lost %d revocation events, want 1", a.lossy.lost.Load())
	}
	if st := b.enf.Stats(); st.CaughtUp != 1 || st.Applied != 1 {
		t.Fatalf("b's enforcer: %+v, want the deny applied once, from the store", st)
	}
	if !b.hasBooking("b2") {
		t.Fatal("b closed a connection of another booking")
	}

	if status := a.api(t, "POST", fmt.Sprintf("/bids/allow?bid=b1&exp=%d", exp), admin); status != http.StatusNoContent {
		t.Fatalf("allow on a: %d", status)
	}
	wait.For(t, "b allows b1 again", func() bool {
		_, denied := b.rev.Denied("b1", "", "")
		allows := b.rev.Allowances()
		return !denied && len(allows) == 1 && allows[0].BookingID == "b1" && allows[0].Actor == "operator"
	})
	wait.For(t, "both nodes at revision 2", func() bool { return a.enf.Revision() == 2 && b.enf.Revision() == 2 })
	b.dial(t, wire.PrefixSession, "t1", b.token(t, wire.PrefixSession, "t1", "alice", "b1", auth.ScopeRead))
}

// TestNodeStartedAfterRevocationsLoadsThem: a node that starts after
// changes were recorded loads the store's state and revision: it refuses
// the denied booking, admits the one denied and allowed again (listing its
// allowance), and has nothing to catch up.
func TestNodeStartedAfterRevocationsLoadsThem(t *testing.T) {
	net, st := newNetwork(t), sharedStore(t)
	a := startNodeWith(t, net, "a", nodeOptions{revocations: st, poll: testPoll})
	admin := a.token(t, "", "", "operator", "", auth.ScopeAdmin)
	exp := time.Now().Add(time.Hour).Unix()
	for _, req := range []string{"deny?bid=b1", "deny?bid=b9", "allow?bid=b9"} {
		if status := a.api(t, "POST", fmt.Sprintf("/bids/%s&exp=%d", req, exp), admin); status != http.StatusNoContent {
			t.Fatalf("%s on a: %d", req, status)
		}
	}

	c := startNodeWith(t, net, "c", nodeOptions{revocations: st, poll: testPoll})
	if r := c.enf.Revision(); r != 3 {
		t.Fatalf("c started at revision %d, want 3", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	if conn, err := client.Dial(ctx, c.url, "t1", c.token(t, wire.PrefixSession, "t1", "alice", "b1", auth.ScopeRead), nil); err == nil {
		conn.CloseNow()
		t.Fatal("c admitted b1, denied before it started")
	}
	c.dial(t, wire.PrefixSession, "t1", c.token(t, wire.PrefixSession, "t1", "alice", "b9", auth.ScopeRead))
	if allows := c.rev.Allowances(); len(allows) != 1 || allows[0].BookingID != "b9" {
		t.Fatalf("c's allowances: %+v, want b9's", allows)
	}
	if err := c.enf.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.enf.Stats(); st.CaughtUp != 0 || st.Applied != 0 {
		t.Fatalf("c's enforcer after a catch-up: %+v, want nothing applied (all loaded)", st)
	}
}

// TestRevocationEventsApplyInRevisionOrder: events of one booking that
// arrive out of revision order (the allow recorded after the deny arrives
// first) end as the later change says, on a node that gets them in either
// order; the late, older event is counted stale. The nodes' own stores hold
// nothing, so no catch-up hides the order.
func TestRevocationEventsApplyInRevisionOrder(t *testing.T) {
	net := newNetwork(t)
	early, late := startNode(t, net, "early"), startNode(t, net, "late")
	x, err := net.Join("x")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	deny := `{"op":"revoke","kind":"booking","value":"b1","expires_at":"` + exp + `","revision":1,"node":"x","seq":1}`
	allow := `{"op":"unrevoke","kind":"booking","value":"b1","allow":true,"actor":"op","expires_at":"` + exp + `","revision":2,"node":"x","seq":2}`
	subject := control.RevocationsSubject(cluster.DefaultPrefix)
	// Both nodes receive x's events in x's publishing order: allow, then
	// deny.
	for _, body := range []string{allow, deny} {
		if err := x.Publish(&cluster.Msg{Subject: subject, Data: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*node{early, late} {
		wait.For(t, "both events handled", func() bool { st := n.enf.Stats(); return st.Applied+st.Stale == 2 })
		if _, denied := n.rev.Denied("b1", "", ""); denied {
			t.Fatal("b1 denied: the deny (revision 1) arriving after the allow (revision 2) was applied")
		}
		if st := n.enf.Stats(); st.Applied != 1 || st.Stale != 1 {
			t.Fatalf("enforcer: %+v, want the allow applied and the deny stale", st)
		}
	}
}

// TestConcurrentDenyAndAllowEndAlikeEverywhere: the same booking denied
// on node a and allowed on node b at the same moment, for many bookings:
// once both nodes have applied the store's last revision, each booking is
// denied on both nodes exactly when the store holds its revocation.
func TestConcurrentDenyAndAllowEndAlikeEverywhere(t *testing.T) {
	net, st := newNetwork(t), sharedStore(t)
	a := startNodeWith(t, net, "a", nodeOptions{revocations: st, poll: time.Hour}) // the bus alone, unless a gap calls for the store
	b := startNodeWith(t, net, "b", nodeOptions{revocations: st, poll: time.Hour})
	exp := time.Now().Add(time.Hour).Unix()
	post := func(n *node, path string) error {
		req, _ := http.NewRequest("POST", n.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+n.token(t, "", "", "operator", "", auth.ScopeAdmin))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("%s: %d", path, resp.StatusCode)
		}
		return nil
	}
	const bookings = 30
	var wg sync.WaitGroup
	errs := make(chan error, 2*bookings)
	for i := range bookings {
		id := fmt.Sprintf("c%d", i)
		wg.Go(func() { errs <- post(a, fmt.Sprintf("/bids/deny?bid=%s&exp=%d", id, exp)) })
		wg.Go(func() { errs <- post(b, fmt.Sprintf("/bids/allow?bid=%s&exp=%d", id, exp)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	final, err := st.RevocationRevision(ctx)
	if err != nil || final != 2*bookings {
		t.Fatalf("store revision %d, %v; want %d", final, err, 2*bookings)
	}
	wait.For(t, "both nodes at the store's revision", func() bool { return a.enf.Revision() == final && b.enf.Revision() == final })
	revs, err := st.Revocations(ctx, store.RevokeBooking, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inStore := map[string]bool{}
	for _, rv := range revs {
		inStore[rv.Value] = true
	}
	for i := range bookings {
		id := fmt.Sprintf("c%d", i)
		for name, n := range map[string]*node{"a": a, "b": b} {
			if _, denied := n.rev.Denied(id, "", ""); denied != inStore[id] {
				t.Errorf("%s: node %s denies %v, the store holds a revocation: %v", id, name, denied, inStore[id])
			}
		}
	}
	t.Logf("%d of %d bookings ended denied; stale events: a %d, b %d; caught up: a %d, b %d", len(revs), bookings,
		a.enf.Stats().Stale, b.enf.Stats().Stale, a.enf.Stats().CaughtUp, b.enf.Stats().CaughtUp)
}

// unreachableLog is a change log whose database can be taken away.
type unreachableLog struct {
	store.RevocationLog
	down atomic.Bool
}

func (l *unreachableLog) RevocationRevision(ctx context.Context) (int64, error) {
	if l.down.Load() {
		return 0, fmt.Errorf("test: %w", store.ErrUnavailable)
	}
	return l.RevocationLog.RevocationRevision(ctx)
}

func (l *unreachableLog) RevocationChanges(ctx context.Context, after int64, limit int) (store.RevocationChanges, error) {
	if l.down.Load() {
		return store.RevocationChanges{}, fmt.Errorf("test: %w", store.ErrUnavailable)
	}
	return l.RevocationLog.RevocationChanges(ctx, after, limit)
}

// lockedBuffer is a log destination for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// TestCatchUpWaitsOutAnUnreachableStore: while the store cannot be read,
// the polls fail, are counted and logged once (not once per poll), and the
// node keeps what it knows; once the store answers, the change recorded
// meanwhile is applied.
func TestCatchUpWaitsOutAnUnreachableStore(t *testing.T) {
	st := sharedStore(t)
	rs, err := relay.NewServer(relay.Config{PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rs.Shutdown(ctx)
	})
	rev := control.NewRevocations(nil)
	rev.Add(store.Revocation{Kind: store.RevokeSubject, Value: "known", ExpiresAt: time.Now().Add(time.Hour)})
	changes := &unreachableLog{RevocationLog: st}
	changes.down.Store(true)
	var logs lockedBuffer
	e, err := control.NewEnforcer(control.EnforcerConfig{Revocations: rev, Relay: rs, Log: changes, PollEvery: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	if _, err := st.Revoke(ctx, store.Revocation{Kind: store.RevokeBooking, Value: "b1", ExpiresAt: time.Now().Add(time.Hour)}, store.AuditEvent{Action: "deny"}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "five failed polls", func() bool { return e.Stats().PollFailures >= 5 })
	if _, denied := rev.Denied("b1", "", ""); denied || e.Revision() != 0 {
		t.Fatalf("b1 denied %v at revision %d while the store could not be read", denied, e.Revision())
	}
	if _, denied := rev.Denied("", "known", ""); !denied {
		t.Fatal("the revocation known before the outage was dropped")
	}
	if n := logs.count("cannot read revocation changes"); n != 1 {
		t.Fatalf("%d failure lines logged for %d failed polls, want 1", n, e.Stats().PollFailures)
	}

	changes.down.Store(false)
	wait.For(t, "the change recorded during the outage applied", func() bool {
		_, denied := rev.Denied("b1", "", "")
		return denied && e.Revision() == 1
	})
	wait.For(t, "the recovery logged", func() bool { return logs.count("reading revocation changes from the store again") == 1 })
}
