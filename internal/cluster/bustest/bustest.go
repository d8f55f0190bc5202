// Package bustest is the conformance suite every cluster.Bus
// implementation must pass (the in-memory bus today, the NATS bus next),
// so that code written against one works on the other. A bus's test calls
// Run with a function that starts a cluster of n connected nodes.
package bustest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
)

// Options shape the cluster a test asks for.
type Options struct {
	// MaxPendingMsgs bounds each subscription's queue, in messages; 0
	// means the implementation's default.
	MaxPendingMsgs int
}

// Open starts n connected nodes and returns their buses, with distinct
// node ids. The suite waits until each lists all n as members. The buses,
// and whatever carries them, must be released when t ends; the suite may
// close some buses itself first.
type Open func(t *testing.T, n int, opts Options) []cluster.Bus

// Run runs the suite as subtests of t, one after the other (one of them
// counts goroutines).
func Run(t *testing.T, open Open) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, open Open)
	}{
		{"PublishSubscribe", testPublishSubscribe},
		{"NoEcho", testNoEcho},
		{"OrderPerPublisher", testOrderPerPublisher},
		{"HeadersAndData", testHeadersAndData},
		{"Unsubscribe", testUnsubscribe},
		{"RequestReply", testRequestReply},
		{"RequestErrors", testRequestErrors},
		{"InvalidSubjects", testInvalidSubjects},
		{"Membership", testMembership},
		{"Closed", testClosed},
		{"SlowConsumer", testSlowConsumer},
		{"NoGoroutineLeak", testNoGoroutineLeak},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// wait is how long the suite waits for anything that should happen soon.
const wait = 10 * time.Second

// probeHeader marks the messages the suite sends to learn that a
// subscription's interest has reached a publisher; collectors skip them.
const probeHeader = "Bustest-Probe"

// start opens n nodes and waits until each lists all of them.
func start(t *testing.T, open Open, n int, opts Options) []cluster.Bus {
	t.Helper()
	buses := open(t, n, opts)
	if len(buses) != n {
		t.Fatalf("open returned %d buses, want %d", len(buses), n)
	}
	var ids []string
	for _, b := range buses {
		ids = append(ids, b.NodeID())
	}
	slices.Sort(ids)
	if len(slices.Compact(slices.Clone(ids))) != n {
		t.Fatalf("node ids %v are not distinct", ids)
	}
	for _, b := range buses {
		waitFor(t, "membership of "+b.NodeID(), func() bool { return slices.Equal(memberIDs(b.Members()), ids) })
	}
	return buses
}

func memberIDs(ms []cluster.Member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// waitFor polls cond until it holds or the suite's wait passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// collector is a subscription that keeps what it receives.
type collector struct {
	sub      cluster.Subscription
	msgs     chan *cluster.Msg
	probed   chan struct{}
	overflow atomic.Bool
}

func subscribe(t *testing.T, b cluster.Bus, subject string) *collector {
	t.Helper()
	c := &collector{msgs: make(chan *cluster.Msg, 8192), probed: make(chan struct{}, 1)}
	sub, err := b.Subscribe(subject, func(m *cluster.Msg) {
		if m.Header[probeHeader] != "" {
			select {
			case c.probed <- struct{}{}:
			default:
			}
			return
		}
		select {
		case c.msgs <- m:
		default:
			c.overflow.Store(true)
		}
	})
	if err != nil {
		t.Fatalf("%s: subscribe %s: %v", b.NodeID(), subject, err)
	}
	c.sub = sub
	return c
}

// settle publishes probes on subject from pub until c has received one:
// from then on, what pub publishes on subject reaches c.
func (c *collector) settle(t *testing.T, pub cluster.Bus, subject string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		publish(t, pub, &cluster.Msg{Subject: subject, Header: cluster.Header{probeHeader: "1"}})
		select {
		case <-c.probed:
			return
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("a subscription of %s never heard from %s", subject, pub.NodeID())
		}
	}
}

func (c *collector) next(t *testing.T) *cluster.Msg {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(wait):
		t.Fatal("no message within the wait")
		return nil
	}
}

// empty fails if c holds a message now.
func (c *collector) empty(t *testing.T, why string) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Fatalf("%s: got %q on %s", why, m.Data, m.Subject)
	default:
	}
}

func publish(t *testing.T, b cluster.Bus, m *cluster.Msg) {
	t.Helper()
	if err := b.Publish(m); err != nil {
		t.Fatalf("%s: publish on %s: %v", b.NodeID(), m.Subject, err)
	}
}

func text(subject, data string) *cluster.Msg {
	return &cluster.Msg{Subject: subject, Data: []byte(data)}
}

func testPublishSubscribe(t *testing.T, open Open) {
	bs := start(t, open, 3, Options{})
	const s = "bt.ps.s"
	c1, c2 := subscribe(t, bs[1], s), subscribe(t, bs[2], s)
	c1.settle(t, bs[0], s)
	c2.settle(t, bs[0], s)
	publish(t, bs[0], text(s, "hello"))
	publish(t, bs[0], text("bt.ps.other", "elsewhere"))
	for _, c := range []*collector{c1, c2} {
		if m := c.next(t); string(m.Data) != "hello" || m.Subject != s {
			t.Fatalf("got %q on %q, want hello on %s", m.Data, m.Subject, s)
		}
	}
	// A subject is exact: the other subject's message reached neither.
	publish(t, bs[0], text(s, "after"))
	for _, c := range []*collector{c1, c2} {
		if m := c.next(t); string(m.Data) != "after" {
			t.Fatalf("got %q, want after", m.Data)
		}
	}
}

func testNoEcho(t *testing.T, open Open) {
	bs := start(t, open, 2, Options{})
	const s = "bt.echo.s"
	c0, c1 := subscribe(t, bs[0], s), subscribe(t, bs[1], s)
	c0.settle(t, bs[1], s)
	c1.settle(t, bs[0], s)
	publish(t, bs[0], text(s, "from 0"))
	if m := c1.next(t); string(m.Data) != "from 0" {
		t.Fatalf("node 1 got %q", m.Data)
	}
	// Node 1 saw "from 0" before it published "from 1": an echo of
	// "from 0" would reach node 0 before "from 1".
	publish(t, bs[1], text(s, "from 1"))
	if m := c0.next(t); string(m.Data) != "from 1" {
		t.Fatalf("node 0 got %q first: its own message came back", m.Data)
	}
	// Requests are not echoed either: node 0 alone answers on this subject.
	const svc = "bt.echo.svc"
	sub, err := bs[0].Subscribe(svc, func(m *cluster.Msg) { cluster.Respond(bs[0], m, &cluster.Msg{}) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := bs[0].Request(ctx, text(svc, "to myself")); !errors.Is(err, cluster.ErrNoResponders) {
		t.Fatalf("a request to the node's own subscription: %v, want ErrNoResponders", err)
	}
}

func testOrderPerPublisher(t *testing.T, open Open) {
	bs := start(t, open, 3, Options{})
	const s, n = "bt.order.s", 1000
	c := subscribe(t, bs[0], s)
	c.settle(t, bs[1], s)
	c.settle(t, bs[2], s)
	var wg sync.WaitGroup
	for _, b := range bs[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := b.Publish(&cluster.Msg{Subject: s, Header: cluster.Header{"From": b.NodeID()}, Data: []byte(strconv.Itoa(i))}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	next := map[string]int{}
	for range 2 * n {
		m := c.next(t)
		from := m.Header["From"]
		if want := strconv.Itoa(next[from]); string(m.Data) != want {
			t.Fatalf("from %s: got message %s, want %s", from, m.Data, want)
		}
		next[from]++
	}
	if c.overflow.Load() || c.sub.Dropped() != 0 {
		t.Fatalf("messages dropped under the default bounds (%d)", c.sub.Dropped())
	}
}

func testHeadersAndData(t *testing.T, open Open) {
	bs := start(t, open, 2, Options{})
	const s = "bt.hdr.s"
	c := subscribe(t, bs[1], s)
	c.settle(t, bs[0], s)
	binary := []byte{0, 1, 2, 0xff, 0, '\n', '\r'}
	publish(t, bs[0], &cluster.Msg{Subject: s, Header: cluster.Header{"Sb-Source": bs[0].NodeID(), "Sb-Seq": "42"}, Data: binary})
	publish(t, bs[0], &cluster.Msg{Subject: s})
	m := c.next(t)
	if string(m.Data) != string(binary) || m.Header["Sb-Source"] != bs[0].NodeID() || m.Header["Sb-Seq"] != "42" {
		t.Fatalf("got %q with %v", m.Data, m.Header)
	}
	if m := c.next(t); len(m.Data) != 0 || len(m.Header) != 0 {
		t.Fatalf("empty message came as %q with %v", m.Data, m.Header)
	}
}

func testUnsubscribe(t *testing.T, open Open) {
	bs := start(t, open, 2, Options{})
	const s = "bt.unsub.s"
	gone, stays := subscribe(t, bs[1], s), subscribe(t, bs[1], s)
	gone.settle(t, bs[0], s)
	stays.settle(t, bs[0], s)
	if err := gone.sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := gone.sub.Unsubscribe(); err != nil {
		t.Fatalf("second Unsubscribe: %v", err)
	}
	publish(t, bs[0], text(s, "x"))
	publish(t, bs[0], text(s, "y"))
	for _, want := range []string{"x", "y"} {
		if m := stays.next(t); string(m.Data) != want {
			t.Fatalf("got %q, want %s", m.Data, want)
		}
	}
	gone.empty(t, "after Unsubscribe")
}

func testRequestReply(t *testing.T, open Open) {
	bs := start(t, open, 3, Options{})
	const svc = "bt.req.svc"
	responder := bs[1]
	sub, err := responder.Subscribe(svc, func(m *cluster.Msg) {
		cluster.Respond(responder, m, &cluster.Msg{Header: cluster.Header{"By": responder.NodeID()}, Data: append([]byte("re:"), m.Data...)})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// The responder's interest reaches the requesters asynchronously.
	for _, b := range []cluster.Bus{bs[0], bs[2]} {
		waitFor(t, "the responder, from "+b.NodeID(), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			_, err := b.Request(ctx, text(svc, "ping"))
			return err == nil
		})
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			q := fmt.Sprintf("q%d", i)
			a, err := bs[i%2*2].Request(ctx, text(svc, q))
			if err != nil {
				t.Errorf("request %s from %s: %v", q, bs[i%2*2].NodeID(), err)
				return
			}
			if string(a.Data) != "re:"+q || a.Header["By"] != bs[1].NodeID() {
				t.Errorf("request %s: answer %q by %s", q, a.Data, a.Header["By"])
			}
		}()
	}
	wg.Wait()
	if err := cluster.Respond(bs[0], text(svc, "not a request"), &cluster.Msg{}); err == nil {
		t.Fatal("Respond to a message without Reply succeeded")
	}
}

func testRequestErrors(t *testing.T, open Open) {
	bs := start(t, open, 2, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	began := time.Now()
	if _, err := bs[0].Request(ctx, text("bt.reqerr.nobody", "?")); !errors.Is(err, cluster.ErrNoResponders) {
		t.Fatalf("request to nobody: %v, want ErrNoResponders", err)
	}
	if d := time.Since(began); d > wait/2 {
		t.Fatalf("no responders took %v: it should fail at once", d)
	}
	const silent = "bt.reqerr.silent"
	c := subscribe(t, bs[1], silent) // answers nothing
	c.settle(t, bs[0], silent)
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if _, err := bs[0].Request(short, text(silent, "?")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request to a silent subscriber: %v, want context.DeadlineExceeded", err)
	}
	canceled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := bs[0].Request(canceled, text(silent, "?")); !errors.Is(err, context.Canceled) {
		t.Fatalf("request with a canceled context: %v", err)
	}
}

func testInvalidSubjects(t *testing.T, open Open) {
	bs := start(t, open, 1, Options{})
	for _, s := range []string{"", "a..b", ".a", "a.", "a.*", "a.>", ">", "a b", "a\tb", "a\x00b", "caf\xc3\xa9"} {
		if err := bs[0].Publish(text(s, "x")); !errors.Is(err, cluster.ErrInvalidSubject) {
			t.Errorf("Publish on %q: %v, want ErrInvalidSubject", s, err)
		}
		if _, err := bs[0].Subscribe(s, func(*cluster.Msg) {}); !errors.Is(err, cluster.ErrInvalidSubject) {
			t.Errorf("Subscribe to %q: %v, want ErrInvalidSubject", s, err)
		}
	}
}

func testMembership(t *testing.T, open Open) {
	bs := start(t, open, 3, Options{})
	events := make(chan cluster.MemberEvent, 64)
	stop := bs[0].WatchMembers(func(e cluster.MemberEvent) { events <- e })
	up := map[string]bool{}
	for len(up) < 3 {
		select {
		case e := <-events:
			if !e.Up || e.Member.Started.IsZero() {
				t.Fatalf("first events: %+v, want Up with a start time", e)
			}
			up[e.Member.ID] = true
		case <-time.After(wait):
			t.Fatalf("watch reported %v, want all three up", up)
		}
	}
	for _, b := range bs {
		if !up[b.NodeID()] {
			t.Fatalf("watch did not report %s", b.NodeID())
		}
	}
	gone := bs[2].NodeID()
	if err := bs[2].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Up || e.Member.ID != gone {
			t.Fatalf("after %s closed: %+v", gone, e)
		}
	case <-time.After(wait):
		t.Fatalf("watch did not report %s down", gone)
	}
	waitFor(t, "members without "+gone, func() bool {
		return slices.Equal(memberIDs(bs[0].Members()), memberIDs(bs[1].Members())) && len(bs[0].Members()) == 2
	})
	stop()
}

func testClosed(t *testing.T, open Open) {
	bs := start(t, open, 2, Options{})
	const silent = "bt.closed.silent"
	c := subscribe(t, bs[1], silent)
	c.settle(t, bs[0], silent)
	pending := make(chan error, 1)
	go func() {
		_, err := bs[0].Request(context.Background(), text(silent, "?"))
		pending <- err
	}()
	// Let the request reach the subscriber, so that it is surely pending.
	waitFor(t, "the request", func() bool { return len(c.msgs) == 1 })
	if err := bs[0].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pending:
		if !errors.Is(err, cluster.ErrClosed) {
			t.Fatalf("pending request after Close: %v, want ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("a pending request outlived Close")
	}
	if err := bs[0].Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := bs[0].Publish(text("bt.closed.s", "x")); !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
	if _, err := bs[0].Subscribe("bt.closed.s", func(*cluster.Msg) {}); !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("Subscribe after Close: %v", err)
	}
	if _, err := bs[0].Request(context.Background(), text(silent, "?")); !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("Request after Close: %v", err)
	}
}

func testSlowConsumer(t *testing.T, open Open) {
	const bound, n = 16, 400
	bs := start(t, open, 2, Options{MaxPendingMsgs: bound})
	const s = "bt.slow.s"
	fast := subscribe(t, bs[1], s)
	fast.settle(t, bs[0], s)
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release) // before the buses close, should the test fail
	var delivered atomic.Int64
	slow, err := bs[1].Subscribe(s, func(m *cluster.Msg) {
		if m.Header[probeHeader] == "" {
			<-gate
			delivered.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Unsubscribe()
	// The slow handler's interest is on the same subject and node as the
	// fast one's, so this settles it too.
	fast.settle(t, bs[0], s)
	// In lock step with the fast subscriber, whose queue so never holds
	// more than one message: Publish does not wait for the stuck handler,
	// which holds up its own subscription only.
	for i := range n {
		publish(t, bs[0], text(s, strconv.Itoa(i)))
		if m := fast.next(t); string(m.Data) != strconv.Itoa(i) {
			t.Fatalf("fast subscriber got %q, want %d", m.Data, i)
		}
	}
	waitFor(t, "drops counted", func() bool { return slow.Dropped() > 0 })
	release()
	waitFor(t, "every message delivered or counted", func() bool { return uint64(delivered.Load())+slow.Dropped() == n })
	if d := delivered.Load(); d > bound+1 {
		t.Fatalf("slow subscriber got %d messages with a queue of %d", d, bound)
	}
}

func testNoGoroutineLeak(t *testing.T, open Open) {
	bs := start(t, open, 2, Options{})
	before := runtime.NumGoroutine()
	const s, svc = "bt.leak.s", "bt.leak.svc"
	c := subscribe(t, bs[1], s)
	c.settle(t, bs[0], s)
	sub, err := bs[1].Subscribe(svc, func(m *cluster.Msg) { cluster.Respond(bs[1], m, &cluster.Msg{}) })
	if err != nil {
		t.Fatal(err)
	}
	stop := bs[0].WatchMembers(func(cluster.MemberEvent) {})
	for i := range 100 {
		publish(t, bs[0], text(s, strconv.Itoa(i)))
	}
	for range 100 {
		c.next(t)
	}
	waitFor(t, "a request answered", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := bs[0].Request(ctx, text(svc, "?"))
		return err == nil
	})
	stop()
	sub.Unsubscribe()
	for _, b := range bs {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, fmt.Sprintf("goroutines back to %d", before), func() bool { return runtime.NumGoroutine() <= before })
}
