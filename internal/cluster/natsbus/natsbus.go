// Package natsbus is the cluster.Bus over NATS core (no JetStream): the
// bus of a node in a cluster. It passes cluster/bustest.
//
// Two ways to reach NATS (Options):
//   - Embedded (RouteListen set): the node runs its own nats-server, named
//     by the node id; the bus talks to it through an in-process connection
//     (its client port is on 127.0.0.1 only, token-protected and unused:
//     see startServer for why it exists). The servers of the nodes form one
//     NATS cluster through routes: each listens on RouteListen and dials
//     Peers; gossip finds the rest, so one live peer is enough. Routes
//     authenticate with a secret every node shares (RouteSecret).
//   - External (URL set): the node is a client of a NATS deployment.
//
// Either way the node has one connection to NATS. Its guarantees map onto
// the cluster.Bus contract so:
//   - No echo: the connection is NoEcho, so a node never receives its own
//     publications, and a request that only the requester itself could
//     answer gets NATS's no-responders status (ErrNoResponders).
//   - Order per publisher: one connection, and NATS keeps a connection's
//     order per subject (routes pin an account to one route connection).
//   - Publish never waits for subscribers: it hands the message to the
//     connection's buffer (or, while disconnected, to its bounded reconnect
//     buffer) and returns. It waits only when that buffer is full and it
//     writes it out itself: for NATS's flow control (a server whose
//     outbound to a route or client is far behind stalls the publishing
//     connection for at most 10 ms per read), or at most writeTimeout (2 s)
//     for a server that stopped reading, after which the connection is
//     dropped and made again.
//   - Each subscription has the NATS client's bounded pending queue
//     (Options.MaxPendingMsgs and MaxPendingBytes) and its own delivery
//     goroutine (the client's: one per subscription, idle or not); what
//     does not fit is dropped by the client and counted
//     (Subscription.Dropped), and the event counted in
//     Status.SlowConsumerEvents. Messages a server drops (a slow route, a
//     slow connection closed) are not seen here: the relay's per-source
//     sequence numbers count those.
//   - Request uses the client's response multiplexer; a subject with no
//     subscriber anywhere fails at once with cluster.ErrNoResponders.
//   - Max payload: Open refuses to start when the connection's max payload
//     (the server's max_payload) cannot carry Options.MaxMessage plus
//     HeaderRoom; the embedded server is configured to carry it.
//
// Membership is heartbeats (members.go): every node publishes one on
// <prefix>.node.<id>.hb each HeartbeatInterval and when it sees a new
// member; a member is down when it says goodbye (Close) or after
// MemberTimeout without a heartbeat. The defaults (500 ms, 2 s) report a
// killed node down within 2.25 s.
//
// Locks: Bus.mu guards the membership, the watchers and the
// subscriptions' registry; a subscription's mu is held while its handler
// runs (so that Close can wait for it) and is never taken under Bus.mu.
// Handlers and watch functions are called with no Bus lock held.
//
// It imports cluster, nats-server and nats.go only.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/switchboard-hub/switchboard/internal/cluster"
)

// Defaults of Options fields left zero.
const (
	DefaultClusterName       = "switchboard"
	DefaultHeartbeatInterval = 500 * time.Millisecond
	DefaultMemberTimeout     = 2 * time.Second
	// DefaultMaxPayload is the embedded server's max payload when
	// MaxMessage needs less: NATS's own default, 1 MiB.
	DefaultMaxPayload = 1 << 20
)

// HeaderRoom is what a message's headers may take on top of its Data: a
// NATS max payload counts both. The relay's headers (source, kind,
// sequence) take under 100 bytes.
const HeaderRoom = 1024

// MaxMaxMessage bounds Options.MaxMessage: NATS is not made for larger
// messages, and each server's pending buffers must hold several.
const MaxMaxMessage = 64 << 20

// MinRouteSecretLength is the shortest route secret Open accepts.
const MinRouteSecretLength = 16

// startTimeout bounds how long Open waits for the embedded server and for
// the first connection.
const startTimeout = 10 * time.Second

// writeTimeout bounds a write to NATS (see connect).
const writeTimeout = 2 * time.Second

// closeFlushTimeout bounds how long Close waits for its goodbye to leave.
const closeFlushTimeout = time.Second

// Options configure a node's bus. Exactly one of RouteListen and URL is
// set.
type Options struct {
	// NodeID is this node's id: one subject token (no "."), unique in the
	// cluster; also the embedded server's name.
	NodeID string
	// Prefix is the first token of the bus's own subjects (heartbeats);
	// "" means cluster.DefaultPrefix.
	Prefix string

	// RouteListen is HOST:PORT of the embedded server's route listener;
	// port 0 picks a free port (Bus.RouteAddr tells which).
	RouteListen string
	// Peers are other nodes' route listeners, HOST:PORT. The node's own
	// address may be among them (it is ignored), so every node can be
	// given the same list.
	Peers []string
	// ClusterName names the NATS cluster; "" means DefaultClusterName.
	// Servers with different names do not route to each other.
	ClusterName string
	// RouteSecret authenticates routes: servers whose secrets differ
	// refuse each other. At least MinRouteSecretLength bytes; required
	// with RouteListen. It never appears in logs or errors.
	RouteSecret string

	// URL is an external NATS deployment's URL (comma-separated for
	// several servers), instead of the embedded server. It may carry
	// credentials; it never appears in errors.
	URL string

	// MaxMessage is the largest Data the node publishes (the relay's
	// largest message). Open fails when NATS cannot carry MaxMessage plus
	// HeaderRoom in one message. 0 means no requirement beyond headers.
	MaxMessage int

	// MaxPendingMsgs and MaxPendingBytes bound each subscription's queue
	// (bytes count Data and encoded headers); 0 means the NATS client's
	// default (524,288 messages, 64 MiB).
	MaxPendingMsgs  int
	MaxPendingBytes int

	// HeartbeatInterval is how often the node announces itself; 0 means
	// DefaultHeartbeatInterval. MemberTimeout is how long a member stays
	// up without a heartbeat; 0 means DefaultMemberTimeout. It must be at
	// least twice HeartbeatInterval.
	HeartbeatInterval time.Duration
	MemberTimeout     time.Duration

	// Logger receives the embedded server's notices, warnings and errors
	// and the connection's disconnects and reconnects; nil logs nothing.
	Logger *slog.Logger
}

// withDefaults validates o and fills in its defaults; errors name the
// setting.
func (o Options) withDefaults() (Options, error) {
	if err := cluster.ValidSubject(o.NodeID); err != nil || strings.Contains(o.NodeID, ".") {
		return o, fmt.Errorf("natsbus: NodeID %q: want one subject token (printable ASCII without space, \".\", \"*\", \">\")", o.NodeID)
	}
	if o.Prefix == "" {
		o.Prefix = cluster.DefaultPrefix
	}
	if err := cluster.ValidSubject(o.Prefix); err != nil {
		return o, fmt.Errorf("natsbus: Prefix: %w", err)
	}
	switch {
	case o.RouteListen == "" && o.URL == "":
		return o, errors.New("natsbus: set RouteListen (embedded NATS) or URL (external NATS)")
	case o.RouteListen != "" && o.URL != "":
		return o, errors.New("natsbus: RouteListen (embedded NATS) and URL (external NATS) are exclusive")
	case o.URL != "" && (len(o.Peers) > 0 || o.RouteSecret != "" || o.ClusterName != ""):
		return o, errors.New("natsbus: Peers, RouteSecret and ClusterName are for the embedded NATS (RouteListen), not with URL")
	case o.RouteListen != "" && len(o.RouteSecret) < MinRouteSecretLength:
		return o, fmt.Errorf("natsbus: RouteSecret: %d bytes, want at least %d", len(o.RouteSecret), MinRouteSecretLength)
	case o.MaxMessage < 0 || o.MaxMessage > MaxMaxMessage:
		return o, fmt.Errorf("natsbus: MaxMessage %d: want 0 to %d", o.MaxMessage, MaxMaxMessage)
	case o.MaxPendingMsgs < 0:
		return o, fmt.Errorf("natsbus: MaxPendingMsgs %d: must not be negative; 0 means the NATS client's default", o.MaxPendingMsgs)
	case o.MaxPendingBytes < 0:
		return o, fmt.Errorf("natsbus: MaxPendingBytes %d: must not be negative; 0 means the NATS client's default", o.MaxPendingBytes)
	case o.HeartbeatInterval < 0 || o.MemberTimeout < 0:
		return o, errors.New("natsbus: HeartbeatInterval and MemberTimeout must not be negative")
	}
	if o.ClusterName == "" && o.RouteListen != "" {
		o.ClusterName = DefaultClusterName
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.MemberTimeout == 0 {
		o.MemberTimeout = max(DefaultMemberTimeout, 2*o.HeartbeatInterval)
	}
	if o.MemberTimeout < 2*o.HeartbeatInterval {
		return o, fmt.Errorf("natsbus: MemberTimeout %v: want at least twice HeartbeatInterval (%v)", o.MemberTimeout, o.HeartbeatInterval)
	}
	return o, nil
}

// neededPayload is the max payload NATS must allow for o.MaxMessage.
func (o *Options) neededPayload() int64 { return int64(o.MaxMessage) + HeaderRoom }

// Bus is one node's bus over NATS.
type Bus struct {
	opts      Options
	self      cluster.Member
	hbSubject string          // this node's heartbeat subject
	srv       *server.Server  // the embedded server; nil with an external URL
	nc        *nats.Conn      // the node's one connection
	closing   context.Context // done when Close begins: pending requests give up
	cancel    context.CancelFunc
	closed    atomic.Bool // set by Close before it waits for handlers

	slowConsumerEvents atomic.Uint64
	disconnects        atomic.Uint64
	reconnects         atomic.Uint64

	mu       sync.Mutex
	isClosed bool                       // guarded by mu; Close has begun
	subs     map[*subscription]struct{} // guarded by mu
	members  map[string]*peer           // guarded by mu; the others, by id
	watchers map[*watcher]struct{}      // guarded by mu
	hbSub    *nats.Subscription         // guarded by mu; the heartbeat subscription
	running  sync.WaitGroup             // the heartbeat loop
	stopHB   chan struct{}              // closed by Close: the heartbeat loop ends
}

var _ cluster.Bus = (*Bus)(nil)

// Open starts the node's bus: it starts the embedded server (with
// RouteListen) or connects to URL, checks the max payload and begins
// heartbeats. The other members appear as their heartbeats arrive.
func Open(opts Options) (*Bus, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	started := time.Unix(0, time.Now().UnixNano()) // as peers will see it: no monotonic reading
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		opts:      opts,
		self:      cluster.Member{ID: opts.NodeID, Started: started},
		hbSubject: heartbeatSubject(opts.Prefix, opts.NodeID),
		closing:   ctx,
		cancel:    cancel,
		subs:      map[*subscription]struct{}{},
		members:   map[string]*peer{},
		watchers:  map[*watcher]struct{}{},
		stopHB:    make(chan struct{}),
	}
	fail := func(err error) (*Bus, error) {
		cancel()
		if b.nc != nil {
			b.nc.Close()
		}
		if b.srv != nil {
			b.srv.Shutdown()
			b.srv.WaitForShutdown()
		}
		return nil, err
	}
	token := ""
	if opts.RouteListen != "" {
		if b.srv, token, err = startServer(&opts); err != nil {
			return fail(err)
		}
	}
	if b.nc, err = b.connect(token); err != nil {
		return fail(err)
	}
	if got, need := b.nc.MaxPayload(), opts.neededPayload(); got < need {
		return fail(fmt.Errorf("natsbus: the NATS max payload is %d bytes, but the largest message (%d bytes) plus %d bytes of headers needs %d: raise max_payload in the NATS server configuration or lower the maximum message size",
			got, opts.MaxMessage, HeaderRoom, need))
	}
	if err := b.startMembership(); err != nil {
		return fail(err)
	}
	return b, nil
}

// connect opens the node's connection: in process to the embedded server
// (presenting its token), or to the external URL.
func (b *Bus) connect(token string) (*nats.Conn, error) {
	log := b.opts.Logger
	nopts := []nats.Option{
		nats.Name(b.opts.NodeID),
		nats.NoEcho(),
		nats.NoCallbacksAfterClientClose(),
		nats.Timeout(startTimeout),
		nats.MaxReconnects(-1), // a node keeps trying; Status tells it is disconnected
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(2),
		// A Publish that fills the connection's buffer writes it out
		// itself: bound that write, so that a NATS server that stops
		// reading costs a reconnect, not a stuck node.
		nats.FlusherTimeout(writeTimeout),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				// The messages are counted by the subscription (Dropped).
				b.slowConsumerEvents.Add(1)
				return
			}
			if log != nil {
				subject := ""
				if sub != nil {
					subject = sub.Subject
				}
				log.Warn("natsbus: asynchronous NATS error", "subject", subject, "err", err)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.disconnects.Add(1)
			if log != nil && !b.closed.Load() {
				log.Warn("natsbus: disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			b.reconnects.Add(1)
			if log != nil {
				log.Info("natsbus: reconnected to NATS")
			}
		}),
	}
	url := b.opts.URL
	if b.srv != nil {
		nopts = append(nopts, nats.InProcessServer(b.srv), nats.Token(token))
		url = "" // the in-process connection needs none
	}
	nc, err := nats.Connect(url, nopts...)
	var parseErr *neturl.Error
	switch {
	case err == nil:
		return nc, nil
	case b.srv != nil:
		return nil, fmt.Errorf("natsbus: connect to the embedded NATS server: %w", err)
	case errors.As(err, &parseErr):
		// Its text holds the whole URL, credentials and all.
		return nil, fmt.Errorf("natsbus: URL: not a NATS URL: %v", parseErr.Err)
	default:
		// The client's dial errors name host and port, not credentials.
		return nil, fmt.Errorf("natsbus: connect to NATS (URL): %w", err)
	}
}

// NodeID returns this node's id.
func (b *Bus) NodeID() string { return b.self.ID }

// Settled reports whether the membership has settled since the node
// joined: MemberTimeout has passed, so every member that is up has had time
// to be heard. Before that, Members may still lack some.
func (b *Bus) Settled() bool { return time.Since(b.self.Started) >= b.opts.MemberTimeout }

// RouteAddr returns the embedded server's route listener address, or nil
// with an external URL.
func (b *Bus) RouteAddr() *net.TCPAddr {
	if b.srv == nil {
		return nil
	}
	return b.srv.ClusterAddr()
}

// Status is the bus's health and its counters since Open.
type Status struct {
	Connected bool // the connection to NATS is up
	// Routes is how many route connections the embedded server has (with
	// the default pool, several per peer); 0 with an external URL.
	Routes int
	// Disconnects and Reconnects count the connection's losses and
	// recoveries.
	Disconnects, Reconnects uint64
	// SlowConsumerEvents counts the times a subscription's queue
	// overflowed; the messages lost are counted by each subscription.
	SlowConsumerEvents uint64
}

// Status returns the bus's health now.
func (b *Bus) Status() Status {
	s := Status{
		Connected:          b.nc.IsConnected(),
		Disconnects:        b.disconnects.Load(),
		Reconnects:         b.reconnects.Load(),
		SlowConsumerEvents: b.slowConsumerEvents.Load(),
	}
	if b.srv != nil {
		s.Routes = b.srv.NumRoutes()
	}
	return s
}

// outMsg is a NATS message Publish builds, recycled through outMsgPool:
// the client encodes a message before PublishMsg returns and keeps no
// reference to it. Header's values are one-element windows on values, so
// a warm outMsg takes a message's headers without allocating.
type outMsg struct {
	nats.Msg
	values []string
}

var outMsgPool = sync.Pool{New: func() any { return &outMsg{Msg: nats.Msg{Header: nats.Header{}}} }}

// Publish sends m to every other node's subscriptions of m.Subject.
func (b *Bus) Publish(m *cluster.Msg) error {
	if err := cluster.ValidSubject(m.Subject); err != nil {
		return err
	}
	if b.closed.Load() {
		return cluster.ErrClosed
	}
	out := outMsgPool.Get().(*outMsg)
	err := out.fill(m)
	if err == nil {
		err = b.nc.PublishMsg(&out.Msg)
	}
	out.reset()
	outMsgPool.Put(out)
	return b.publishError(m.Subject, err)
}

func (b *Bus) publishError(subject string, err error) error {
	switch {
	case err == nil:
		return nil
	case b.closed.Load() || errors.Is(err, nats.ErrConnectionClosed):
		return cluster.ErrClosed
	default:
		return fmt.Errorf("natsbus: publish on %s: %w", subject, err)
	}
}

// fill copies m into the empty out, checking headers: keys are printable
// ASCII without space or ":", values printable ASCII (tab allowed), so
// that they survive NATS's header encoding.
func (out *outMsg) fill(m *cluster.Msg) error {
	out.Subject, out.Reply, out.Data = m.Subject, m.Reply, m.Data
	for k, v := range m.Header {
		if !validHeaderKey(k) || !validHeaderValue(v) {
			return fmt.Errorf("natsbus: header %.64q: %.64q: want printable ASCII, keys without space or \":\"", k, v)
		}
		out.values = append(out.values, v)
		n := len(out.values)
		out.Header[k] = out.values[n-1 : n : n]
	}
	return nil
}

// reset empties out for reuse, keeping its map and values array.
func (out *outMsg) reset() {
	clear(out.Header)
	clear(out.values)
	out.values = out.values[:0]
	out.Subject, out.Reply, out.Data = "", "", nil
}

func validHeaderKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

// fromNats converts a received NATS message.
func fromNats(nm *nats.Msg) *cluster.Msg {
	m := &cluster.Msg{Subject: nm.Subject, Reply: nm.Reply, Data: nm.Data}
	if len(nm.Header) > 0 {
		m.Header = make(cluster.Header, len(nm.Header))
		for k, vs := range nm.Header {
			if len(vs) > 0 {
				m.Header[k] = vs[0]
			}
		}
	}
	return m
}

// Subscribe calls h with every message another node publishes on subject.
func (b *Bus) Subscribe(subject string, h cluster.Handler) (cluster.Subscription, error) {
	if err := cluster.ValidSubject(subject); err != nil {
		return nil, err
	}
	s := &subscription{bus: b, h: h}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed {
		return nil, cluster.ErrClosed
	}
	ns, err := b.nc.Subscribe(subject, s.deliver)
	if err != nil {
		return nil, b.publishError(subject, err)
	}
	if b.opts.MaxPendingMsgs != 0 || b.opts.MaxPendingBytes != 0 {
		msgs, bytes, _ := ns.PendingLimits()
		if b.opts.MaxPendingMsgs != 0 {
			msgs = b.opts.MaxPendingMsgs
		}
		if b.opts.MaxPendingBytes != 0 {
			bytes = b.opts.MaxPendingBytes
		}
		if err := ns.SetPendingLimits(msgs, bytes); err != nil {
			ns.Unsubscribe()
			return nil, fmt.Errorf("natsbus: subscribe to %s: %w", subject, err)
		}
	}
	s.ns = ns
	b.subs[s] = struct{}{}
	return s, nil
}

// Request publishes m with a reply inbox of the connection's and returns
// the first answer.
func (b *Bus) Request(ctx context.Context, m *cluster.Msg) (*cluster.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := cluster.ValidSubject(m.Subject); err != nil {
		return nil, err
	}
	if b.closed.Load() {
		return nil, cluster.ErrClosed
	}
	out := &outMsg{Msg: nats.Msg{Header: nats.Header{}}}
	if err := out.fill(m); err != nil {
		return nil, err
	}
	out.Reply = "" // the client sets its own inbox
	// End the wait when Close begins, as well as with ctx.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(b.closing, cancel)()
	a, err := b.nc.RequestMsgWithContext(rctx, &out.Msg)
	switch {
	case err == nil:
		return fromNats(a), nil
	case b.closing.Err() != nil || errors.Is(err, nats.ErrConnectionClosed):
		return nil, cluster.ErrClosed
	case errors.Is(err, nats.ErrNoResponders):
		return nil, cluster.ErrNoResponders
	case ctx.Err() != nil:
		return nil, ctx.Err()
	default:
		return nil, fmt.Errorf("natsbus: request on %s: %w", m.Subject, err)
	}
}

// Close says goodbye to the other members, ends subscriptions and watches,
// closes the connection and shuts the embedded server down.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.isClosed {
		b.mu.Unlock()
		return nil
	}
	b.isClosed = true
	b.closed.Store(true)
	subs, watchers, hbSub := b.subs, b.watchers, b.hbSub
	b.subs, b.watchers = nil, nil
	close(b.stopHB)
	b.mu.Unlock()

	b.cancel() // pending requests fail with ErrClosed
	b.running.Wait()
	if hbSub != nil {
		hbSub.Unsubscribe()
	}
	// Goodbye, so that the others see this node down at once.
	if b.nc.IsConnected() {
		b.publishHeartbeat(true)
		b.nc.FlushTimeout(closeFlushTimeout)
	}
	for s := range subs {
		s.Dropped() // keep the count: NATS forgets it with the subscription
		s.ns.Unsubscribe()
		s.mu.Lock() // waits for a handler call in progress; later ones see closed
		s.mu.Unlock()
	}
	for w := range watchers {
		w.stop()
	}
	b.nc.Close()
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	return nil
}

// subscription is one handler's NATS subscription.
type subscription struct {
	bus          *Bus
	h            cluster.Handler
	ns           *nats.Subscription // set before the subscription is returned
	unsubscribed atomic.Bool
	dropped      atomic.Uint64 // last count read from ns, kept past Unsubscribe

	mu sync.Mutex // held while h runs
}

// deliver is the NATS handler: NATS calls it for one message at a time, on
// the subscription's own goroutine.
func (s *subscription) deliver(nm *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unsubscribed.Load() || s.bus.closed.Load() {
		return
	}
	s.h(fromNats(nm))
}

func (s *subscription) Unsubscribe() error {
	if s.unsubscribed.Swap(true) {
		return nil
	}
	s.Dropped() // keep the count: NATS forgets it with the subscription
	b := s.bus
	b.mu.Lock()
	_, live := b.subs[s]
	delete(b.subs, s)
	b.mu.Unlock()
	if !live { // Close took it
		return nil
	}
	if err := s.ns.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("natsbus: unsubscribe from %s: %w", s.ns.Subject, err)
	}
	return nil
}

// Dropped returns how many messages NATS dropped because this
// subscription's queue was full.
func (s *subscription) Dropped() uint64 {
	if n, err := s.ns.Dropped(); err == nil && n > 0 {
		for {
			old := s.dropped.Load()
			if uint64(n) <= old || s.dropped.CompareAndSwap(old, uint64(n)) {
				break
			}
		}
	}
	return s.dropped.Load()
}
