package natsbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/bustest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

const testSecret = "natsbus-test-route-secret"

// Test nodes announce themselves often, so that they meet quickly, and time
// out late, so that a busy machine never takes a live one down: members of
// these tests leave by saying goodbye (Close), except where a test kills
// one with the default timing.
const (
	testHeartbeat     = 100 * time.Millisecond
	testMemberTimeout = 5 * time.Second
)

// soon bounds the waits for what should happen soon (the channel receives
// and requests that wait.For does not cover).
const soon = wait.Default

// startCluster opens n nodes with embedded servers clustered on random
// loopback ports: the first listens, the others dial it (gossip meshes
// them). opt adjusts each node's options.
func startCluster(t testing.TB, n int, opt func(i int, o *Options)) []*Bus {
	t.Helper()
	buses := make([]*Bus, n)
	for i := range buses {
		o := Options{NodeID: fmt.Sprintf("n%d", i+1), RouteListen: "127.0.0.1:0", RouteSecret: testSecret,
			HeartbeatInterval: testHeartbeat, MemberTimeout: testMemberTimeout}
		if i > 0 {
			o.Peers = []string{buses[0].RouteAddr().String()}
		}
		if opt != nil {
			opt(i, &o)
		}
		b, err := Open(o)
		if err != nil {
			t.Fatalf("open %s: %v", o.NodeID, err)
		}
		t.Cleanup(func() { b.Close() })
		buses[i] = b
	}
	return buses
}

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T, n int, opts bustest.Options) []cluster.Bus {
		nodes := startCluster(t, n, func(_ int, o *Options) { o.MaxPendingMsgs = opts.MaxPendingMsgs })
		buses := make([]cluster.Bus, n)
		for i, b := range nodes {
			buses[i] = b
		}
		return buses
	})
}

func memberIDs(b *Bus) []string {
	var ids []string
	for _, m := range b.Members() {
		ids = append(ids, m.ID)
	}
	return ids
}

// A node killed without saying goodbye (its server stops; nothing more is
// heard from it) is down everywhere within 3 s, with the default timing.
func TestKilledMemberDisappears(t *testing.T) {
	bs := startCluster(t, 3, func(_ int, o *Options) { o.HeartbeatInterval, o.MemberTimeout = 0, 0 })
	for _, b := range bs {
		wait.For(t, "three members at "+b.NodeID(), func() bool { return len(b.Members()) == 3 })
	}
	downs := make(chan cluster.MemberEvent, 8)
	stop := bs[0].WatchMembers(func(e cluster.MemberEvent) {
		if !e.Up {
			downs <- e
		}
	})
	defer stop()
	killed := bs[2]
	began := time.Now()
	killed.srv.Shutdown() // routes and its connection drop at once; no goodbye is sent
	const bound = 3 * time.Second
	select {
	case e := <-downs:
		if e.Member.ID != killed.NodeID() {
			t.Fatalf("down: %+v, want %s", e, killed.NodeID())
		}
	case <-time.After(bound):
		t.Fatalf("%s was not reported down within %v", killed.NodeID(), bound)
	}
	wait.For(t, "n2 without n3", func() bool { return slices.Equal(memberIDs(bs[1]), []string{"n1", "n2"}) })
	took := time.Since(began)
	if took > bound {
		t.Fatalf("the killed node was gone after %v, want within %v", took, bound)
	}
	if want := DefaultMemberTimeout; took < want/2 {
		t.Fatalf("the killed node was down after %v: it cannot have been by heartbeat timeout (%v)", took, want)
	}
	t.Logf("killed node down everywhere after %v", took.Round(time.Millisecond))
}

// A node that restarts with the same id is reported down, then up with its
// new start time.
func TestRestartedMemberIsNew(t *testing.T) {
	bs := startCluster(t, 2, nil)
	wait.For(t, "two members", func() bool { return len(bs[0].Members()) == 2 })
	events := make(chan cluster.MemberEvent, 16)
	stop := bs[0].WatchMembers(func(e cluster.MemberEvent) { events <- e })
	defer stop()
	old := bs[0].Members()[1] // n2, as n1 knows it
	peer := bs[0].RouteAddr().String()
	if err := bs[1].Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(Options{NodeID: "n2", RouteListen: "127.0.0.1:0", RouteSecret: testSecret, Peers: []string{peer},
		HeartbeatInterval: testHeartbeat, MemberTimeout: testMemberTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	var got []string
	for len(got) < 4 {
		select {
		case e := <-events:
			got = append(got, fmt.Sprintf("%s up=%v new=%v", e.Member.ID, e.Up, e.Member.Started.After(old.Started)))
		case <-time.After(soon):
			t.Fatalf("events %v", got)
		}
	}
	want := []string{"n1 up=true new=false", "n2 up=true new=false", "n2 up=false new=false", "n2 up=true new=true"}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n%v\nwant\n%v", got, want)
	}
}

// The subscribe barrier (DESIGN.md §6) holds over the embedded cluster: a
// node subscribes, then sends a request to each other member; a member that
// publishes after answering reaches the new subscription, with no settling.
// (The request travels behind the subscription's interest on the same
// route.) RelayPeers relies on it for the first message after a reader
// joins.
func TestSubscribeBarrier(t *testing.T) {
	bs := startCluster(t, 3, nil)
	reader, writers := bs[1], []*Bus{bs[0], bs[2]}
	for _, w := range writers {
		sub, err := w.Subscribe(cluster.NodeSubject(cluster.DefaultPrefix, w.NodeID(), "sync"), func(m *cluster.Msg) {
			if err := cluster.Respond(w, m, &cluster.Msg{}); err != nil {
				t.Errorf("respond: %v", err)
			}
			if err := w.Publish(&cluster.Msg{Subject: string(m.Data), Data: []byte(w.NodeID())}); err != nil {
				t.Errorf("publish: %v", err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		wait.For(t, "the sync service of "+w.NodeID(), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), soon)
			defer cancel()
			_, err := reader.Request(ctx, &cluster.Msg{Subject: cluster.NodeSubject(cluster.DefaultPrefix, w.NodeID(), "sync"), Data: []byte("sb.t.warmup")})
			return err == nil
		})
	}
	const rounds = 300
	for i := range rounds {
		subject := fmt.Sprintf("sb.t.barrier.%d", i)
		got := make(chan string, 2)
		sub, err := reader.Subscribe(subject, func(m *cluster.Msg) { got <- string(m.Data) })
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range writers {
			ctx, cancel := context.WithTimeout(context.Background(), soon)
			_, err := reader.Request(ctx, &cluster.Msg{Subject: cluster.NodeSubject(cluster.DefaultPrefix, w.NodeID(), "sync"), Data: []byte(subject)})
			cancel()
			if err != nil {
				t.Fatalf("round %d: sync with %s: %v", i, w.NodeID(), err)
			}
		}
		from := map[string]bool{}
		for len(from) < 2 {
			select {
			case id := <-got:
				from[id] = true
			case <-time.After(soon):
				t.Fatalf("round %d: the first messages after the barrier: got %v of both writers", i, from)
			}
		}
		sub.Unsubscribe()
	}
}

// syncBuffer is a log destination tests can read while servers write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A node with the wrong route secret is refused by the cluster's routes and
// never becomes a member; one with the right secret joins.
func TestRouteAuthRefusesWrongSecret(t *testing.T) {
	var logA syncBuffer
	bs := startCluster(t, 1, func(_ int, o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logA, nil)) })
	a := bs[0]
	intruder, err := Open(Options{NodeID: "intruder", RouteListen: "127.0.0.1:0", RouteSecret: "not-the-cluster-secret",
		Peers: []string{a.RouteAddr().String()}, HeartbeatInterval: testHeartbeat, MemberTimeout: testMemberTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	wait.For(t, "n1 to refuse the intruder's route", func() bool { return strings.Contains(logA.String(), "authentication error") })
	if strings.Contains(logA.String(), testSecret) || strings.Contains(logA.String(), routePassword(testSecret)) {
		t.Fatal("the route secret or password was logged")
	}
	// The positive control: a node with the right secret joins.
	friend := startCluster(t, 1, func(_ int, o *Options) { o.NodeID, o.Peers = "friend", []string{a.RouteAddr().String()} })[0]
	wait.For(t, "the friend's membership", func() bool { return slices.Equal(memberIDs(a), []string{"friend", "n1"}) })
	// The friend was heard through the same routes the intruder tried; the
	// intruder's heartbeats were sent all along and never arrived.
	if got := memberIDs(a); !slices.Equal(got, []string{"friend", "n1"}) {
		t.Fatalf("n1 members %v", got)
	}
	if got := memberIDs(intruder); !slices.Equal(got, []string{"intruder"}) {
		t.Fatalf("the intruder sees %v", got)
	}
	if n := intruder.Status().Routes; n != 0 {
		t.Fatalf("the intruder has %d routes", n)
	}
	// And it cannot publish into the cluster.
	const s = "sb.t.secret"
	got := make(chan *cluster.Msg, 1)
	sub, err := a.Subscribe(s, func(m *cluster.Msg) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	wait.For(t, "the friend to reach n1", func() bool {
		friend.Publish(&cluster.Msg{Subject: s, Data: []byte("friend")})
		select {
		case <-got:
			return true
		default:
			return false
		}
	})
	if err := intruder.Publish(&cluster.Msg{Subject: s, Data: []byte("intruder")}); err != nil {
		t.Fatal(err)
	}
	if err := friend.Publish(&cluster.Msg{Subject: s, Data: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case m := <-got:
			switch string(m.Data) {
			case "intruder":
				t.Fatal("the intruder's message reached n1")
			case "after":
				return
			}
		case <-time.After(soon):
			t.Fatal("the friend's message did not arrive")
		}
	}
}

// startExternal starts a plain nats-server with a client port on a random
// loopback port: the "external NATS" of these tests.
func startExternal(t *testing.T, maxPayload int32) string {
	t.Helper()
	return startExternalAt(t, server.RANDOM_PORT, maxPayload).ClientURL()
}

func startExternalAt(t *testing.T, port int, maxPayload int32) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(soon) {
		t.Fatal("external server not ready")
	}
	return srv
}

// When the external NATS goes away, each node sees the others down and
// reports itself disconnected; when it is back, the nodes reconnect, meet
// again, and their subscriptions work without being made again.
func TestExternalOutageAndRecovery(t *testing.T) {
	srv := startExternalAt(t, server.RANDOM_PORT, 0)
	url, port := srv.ClientURL(), srv.Addr().(*net.TCPAddr).Port
	var buses []*Bus
	for _, id := range []string{"n1", "n2"} {
		b, err := Open(Options{NodeID: id, URL: url, HeartbeatInterval: testHeartbeat, MemberTimeout: 4 * testHeartbeat})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		buses = append(buses, b)
	}
	a, b := buses[0], buses[1]
	wait.For(t, "two members", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	const s = "sb.t.outage"
	got := make(chan string, 64)
	sub, err := b.Subscribe(s, func(m *cluster.Msg) { got <- string(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	delivered := func(data string) func() bool {
		return func() bool {
			a.Publish(&cluster.Msg{Subject: s, Data: []byte(data)})
			for {
				select {
				case d := <-got:
					if d == data {
						return true
					}
				case <-time.After(20 * time.Millisecond):
					return false
				}
			}
		}
	}
	wait.For(t, "a message before the outage", delivered("before"))

	srv.Shutdown()
	srv.WaitForShutdown()
	wait.For(t, "each node alone and disconnected", func() bool {
		return len(a.Members()) == 1 && len(b.Members()) == 1 && !a.Status().Connected && !b.Status().Connected
	})

	startExternalAt(t, port, 0) // the same address: the nodes' URL
	wait.For(t, "the members again", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	wait.For(t, "a message after the outage", delivered("after"))
	for _, n := range buses {
		if st := n.Status(); !st.Connected || st.Disconnects == 0 || st.Reconnects == 0 {
			t.Fatalf("%s status after the outage: %+v", n.NodeID(), st)
		}
	}
}

// Over an external NATS whose max payload is too small for the largest
// message, Open refuses with an error that says so; when it suffices, the
// nodes work through it.
func TestExternalMaxPayload(t *testing.T) {
	url := startExternal(t, 64<<10)
	_, err := Open(Options{NodeID: "n1", URL: url, MaxMessage: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "max payload is 65536 bytes") || !strings.Contains(err.Error(), "needs 1049600") {
		t.Fatalf("Open with a max message above the server's max payload: %v", err)
	}
	var buses []*Bus
	for _, id := range []string{"n1", "n2"} {
		b, err := Open(Options{NodeID: id, URL: url, MaxMessage: 64<<10 - HeaderRoom, HeartbeatInterval: testHeartbeat, MemberTimeout: testMemberTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		buses = append(buses, b)
	}
	wait.For(t, "two members", func() bool { return len(buses[0].Members()) == 2 && len(buses[1].Members()) == 2 })
	sendLargest(t, buses[0], buses[1], 64<<10-HeaderRoom)
	if err := buses[0].Publish(&cluster.Msg{Subject: "sb.t.big", Data: make([]byte, 64<<10+1)}); err == nil {
		t.Fatal("a message above the max payload was published")
	}
}

// The embedded servers carry MaxMessage, here above NATS's default 1 MiB.
func TestEmbeddedMaxPayload(t *testing.T) {
	const largest = 3 << 20
	bs := startCluster(t, 2, func(_ int, o *Options) { o.MaxMessage = largest })
	if got := bs[0].nc.MaxPayload(); got < largest+HeaderRoom {
		t.Fatalf("max payload %d", got)
	}
	wait.For(t, "two members", func() bool { return len(bs[0].Members()) == 2 })
	sendLargest(t, bs[0], bs[1], largest)
}

// sendLargest sends a message of size bytes with relay-like headers from
// one node to another.
func sendLargest(t *testing.T, from, to *Bus, size int) {
	t.Helper()
	const s = "sb.t.large"
	got := make(chan *cluster.Msg, 16)
	sub, err := to.Subscribe(s, func(m *cluster.Msg) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	data := bytes.Repeat([]byte{'x'}, size)
	h := cluster.Header{"Sb-Source": from.NodeID(), "Sb-Kind": "binary", "Sb-Seq": "18446744073709551615"}
	wait.For(t, "the largest message", func() bool {
		if err := from.Publish(&cluster.Msg{Subject: s, Header: h, Data: data}); err != nil {
			t.Fatalf("publish %d bytes: %v", size, err)
		}
		select {
		case m := <-got:
			if !bytes.Equal(m.Data, data) || m.Header["Sb-Seq"] != h["Sb-Seq"] {
				t.Fatalf("got %d bytes, headers %v", len(m.Data), m.Header)
			}
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
}

func TestOptionsRefused(t *testing.T) {
	base := Options{NodeID: "n1", RouteListen: "127.0.0.1:0", RouteSecret: testSecret}
	for _, tc := range []struct {
		name string
		edit func(o *Options)
		want string
	}{
		{"no node id", func(o *Options) { o.NodeID = "" }, "NodeID"},
		{"dotted node id", func(o *Options) { o.NodeID = "a.b" }, "NodeID"},
		{"neither", func(o *Options) { o.RouteListen = "" }, "set RouteListen"},
		{"both", func(o *Options) { o.URL = "nats://127.0.0.1:4222" }, "exclusive"},
		{"short secret", func(o *Options) { o.RouteSecret = "short" }, "RouteSecret"},
		{"bad listen", func(o *Options) { o.RouteListen = "127.0.0.1" }, "RouteListen"},
		{"bad peer", func(o *Options) { o.Peers = []string{"127.0.0.1:0"} }, "peer"},
		{"max message", func(o *Options) { o.MaxMessage = MaxMaxMessage + 1 }, "MaxMessage"},
		{"timeout", func(o *Options) { o.HeartbeatInterval, o.MemberTimeout = time.Second, time.Second }, "MemberTimeout"},
		{"negative pending", func(o *Options) { o.MaxPendingBytes = -1 }, "MaxPendingBytes"},
		{"bad url", func(o *Options) {
			o.RouteListen, o.RouteSecret, o.URL = "", "", "nats://sb:"+testSecret+"@127.0.0.1:12ab"
		}, "URL"},
	} {
		o := base
		tc.edit(&o)
		if b, err := Open(o); err == nil {
			b.Close()
			t.Errorf("%s: Open accepted %+v", tc.name, o)
		} else if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), testSecret) {
			t.Errorf("%s: error %q, want one naming %s (and not the secret)", tc.name, err, tc.want)
		}
	}
}

// The embedded server's client port, which nats-server needs for its
// routes to start (see startServer), is on loopback only and refuses a
// client without the node's token.
func TestEmbeddedClientPortRefusesStrangers(t *testing.T) {
	b := startCluster(t, 1, nil)[0]
	addr, ok := b.srv.Addr().(*net.TCPAddr)
	if !ok || !addr.IP.IsLoopback() {
		t.Fatalf("the client port listens on %v, want loopback only", b.srv.Addr())
	}
	nc, err := nats.Connect("nats://"+addr.String(), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("a client without the token connected")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("connect without the token: %v, want an authorization error", err)
	}
	nc, err = nats.Connect("nats://"+addr.String(), nats.MaxReconnects(0), nats.Token("guess"))
	if err == nil {
		nc.Close()
		t.Fatal("a client with a wrong token connected")
	}
}

// An external NATS that cannot be reached fails Open at once, with an error
// that never holds the URL's credentials.
func TestExternalUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = Open(Options{NodeID: "n1", URL: "nats://sb:" + testSecret + "@" + addr})
	if err == nil || !strings.Contains(err.Error(), "connect to NATS") || strings.Contains(err.Error(), testSecret) {
		t.Fatalf("Open with an unreachable URL: %v", err)
	}
	t.Log(err)
}

// A route port in use fails Open at once with the listener's error.
func TestRouteListenInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	began := time.Now()
	_, err = Open(Options{NodeID: "n1", RouteListen: ln.Addr().String(), RouteSecret: testSecret})
	if err == nil || !strings.Contains(err.Error(), "did not start") {
		t.Fatalf("Open on a busy port: %v", err)
	}
	if d := time.Since(began); d > startTimeout/2 {
		t.Fatalf("the failure took %v", d)
	}
}

// A request pending on a node whose server is killed ends with an error,
// not a hang, and Close after the kill returns.
func TestCloseAfterKill(t *testing.T) {
	bs := startCluster(t, 2, nil)
	bs[0].srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := bs[0].Request(ctx, &cluster.Msg{Subject: "sb.x"}); err == nil {
		t.Fatal("a request through a dead server succeeded")
	}
	done := make(chan error, 1)
	go func() { done <- bs[0].Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(soon):
		t.Fatal("Close hung after the server was killed")
	}
	if err := bs[0].Publish(&cluster.Msg{Subject: "sb.x"}); !errors.Is(err, cluster.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}
