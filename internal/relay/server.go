package relay

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Server relays messages between the connections handed to Accept. Its zero
// value is not usable; create one with NewServer.
type Server struct {
	cfg Config

	mu sync.Mutex
	// topics maps a topic name to its *topicState: stored and deleted
	// under mu, loaded without a lock (Publish and Deliver look a topic
	// up per message; a connection keeps its own pointer).
	topics       sync.Map
	numTopics    int                 // guarded by mu; entries in topics
	conns        map[*conn]struct{}  // guarded by mu
	shuttingDown bool                // guarded by mu
	active       sync.WaitGroup      // one per running Accept
	remote       map[string]struct{} // guarded by mu; topics other nodes read (SetRemoteInterest)

	// peers connects the server to other nodes; nil on a node of its own.
	// Set by SetPeers under mu before the first connection, read-only
	// after. interest passes local interest changes on to it.
	peers    Peers
	interest interestReports

	nextID atomic.Uint64

	// Node-wide queue budget (Config.QueueBudgetBytes; see the package doc).
	// queuedBytes is the sum of every connection's queued and in-flight
	// bytes, changed under the connection's mu wherever those change.
	// fairShare is the budget divided by the open connections, stored by
	// register and unregister. budgetOverShare is the part of the budget
	// connections above their fair share may fill.
	queuedBytes     atomic.Int64
	fairShare       atomic.Int64
	budgetOverShare int64

	// Counters, exported by Stats. Traffic is counted on each connection
	// (no shared cache line on the hot path) and folded into retired when
	// the connection ends.
	accepted atomic.Uint64
	closes   [numCloseReasons]atomic.Uint64
	retired  trafficTotals // guarded by mu
	// remoteIn counts messages from other nodes (Deliver); nodeDrops the
	// drops no connection can be charged with (DropNoReaders, DropBusLost).
	remoteIn  atomic.Uint64
	nodeDrops [NumDropReasons]atomic.Uint64
	// sharedIn and sharedBytesIn count the messages of PublishShared (HTTP
	// publish): received like a writer's, so counted in Stats' MessagesIn
	// and BytesIn.
	sharedIn, sharedBytesIn atomic.Uint64
	// coalescedFrames counts the messages written to Info.Coalesce
	// connections that merged several queued ones; coalescedMessages the
	// messages merged into them. Written by such connections' write loops.
	coalescedFrames, coalescedMessages atomic.Uint64
}

// trafficTotals are traffic counters summed over connections.
type trafficTotals struct {
	msgsIn, bytesIn, msgsOut, bytesOut uint64
	drops                              [NumDropReasons]uint64
}

func (t *trafficTotals) add(c *conn) {
	t.msgsIn += c.msgsIn.Load()
	t.bytesIn += c.bytesIn.Load()
	t.msgsOut += c.msgsOut.Load()
	t.bytesOut += c.bytesOut.Load()
	for i := range c.drops {
		t.drops[i] += c.drops[i].Load()
	}
}

// topicState is the set of connections on one topic.
type topicState struct {
	name string
	// readers is the copy-on-write list of connections allowed to read,
	// loaded without locks by senders; replaced under Server.mu.
	readers atomic.Pointer[[]*conn]
	// remote is set while another node reads the topic
	// (SetRemoteInterest, under Server.mu): senders then offer each
	// message to Peers.Forward. Loaded without locks by senders.
	remote     atomic.Bool
	n          int // connections on the topic, guarded by Server.mu
	interested int // readers that count as local interest (not Backpressure), guarded by Server.mu
}

// NewServer returns a Server with cfg, defaults filled in.
func NewServer(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:             cfg,
		conns:           make(map[*conn]struct{}),
		remote:          make(map[string]struct{}),
		budgetOverShare: cfg.QueueBudgetBytes - cfg.QueueBudgetBytes/budgetReserve,
	}
	s.fairShare.Store(cfg.QueueBudgetBytes)
	return s, nil
}

// budgetReserve: the last 1/budgetReserve of the queue budget is kept for
// connections holding no more than their fair share.
const budgetReserve = 4

// reserveQueued adds size bytes, about to be queued for a connection that
// holds own bytes, to the node's total if the budget admits them, and
// reports whether it did. The budget admits them if the total stays within
// budgetOverShare, or within the whole budget for a connection that stays
// within its fair share. One atomic add when the node is below
// budgetOverShare; never allocates.
func (s *Server) reserveQueued(own, size int) bool {
	n := s.queuedBytes.Add(int64(size))
	if n <= s.budgetOverShare || n <= s.cfg.QueueBudgetBytes && int64(own+size) <= s.fairShare.Load() {
		return true
	}
	s.queuedBytes.Add(-int64(size))
	return false
}

// budgetAdmits reports whether reserveQueued(own, size) would succeed now,
// without reserving anything.
func (s *Server) budgetAdmits(own, size int) bool {
	n := s.queuedBytes.Load() + int64(size)
	return n <= s.budgetOverShare || n <= s.cfg.QueueBudgetBytes && int64(own+size) <= s.fairShare.Load()
}

// releaseQueued subtracts n bytes that left a send queue (written, dropped
// or discarded) from the node's total.
func (s *Server) releaseQueued(n int) {
	if n != 0 {
		s.queuedBytes.Add(-int64(n))
	}
}

// updateFairShareLocked recomputes the fair share after the set of
// connections changed. s.mu must be held.
func (s *Server) updateFairShareLocked() {
	s.fairShare.Store(s.cfg.QueueBudgetBytes / int64(max(1, len(s.conns))))
}

// Config returns the server's configuration with defaults applied.
func (s *Server) Config() Config { return s.cfg }

// Accept runs tc until it closes and returns why it closed. The caller's
// goroutine reads from tc; Accept starts one more goroutine that writes to it.
// info must describe a peer that has already been authenticated.
func (s *Server) Accept(ctx context.Context, tc Conn, info Info) CloseReason {
	c := newConn(s, tc, info)
	hs, holds := tc.(Handshaker)
	c.held = holds // not shared yet: messages queue until the handshake is done
	if err := s.register(c); err != nil {
		return s.refuse(err, tc)
	}
	defer s.active.Done()
	if holds {
		if b, ok := s.peers.(Barrier); ok && info.CanRead && !info.Backpressure {
			b.Barrier(ctx, info.Topic)
		}
		if err := hs.Handshake(); err != nil {
			tc.Abort() // run ends on the failed transport, counting it
		}
		c.release()
	}
	return c.run(ctx)
}

// AcceptPair runs a and b as a pair on one topic that no other connection
// may use: each one's messages go to the other alone, a full queue holds up
// the sender instead of dropping (Info.Backpressure is set on both), and when
// one closes the other is closed with CloseNormal. Both are registered before
// either is read, so nothing sent by one is missed by the other. The caller's
// goroutine reads a; AcceptPair returns when both have closed.
func (s *Server) AcceptPair(ctx context.Context, a Conn, ia Info, b Conn, ib Info) {
	ia.Backpressure, ib.Backpressure = true, true
	ca, cb := newConn(s, a, ia), newConn(s, b, ib)
	_, ca.held = a.(Handshaker)
	_, cb.held = b.(Handshaker)
	if err := s.register(ca, cb); err != nil {
		s.refuse(err, a)
		s.refuse(err, b)
		return
	}
	for _, c := range [...]*conn{ca, cb} {
		if hs, ok := c.tc.(Handshaker); ok {
			if err := hs.Handshake(); err != nil {
				c.tc.Abort()
			}
			c.release()
		}
	}
	bDone := make(chan struct{})
	go func() {
		defer close(bDone)
		defer s.active.Done()
		cb.run(ctx)
		ca.close(CloseNormal, ReasonPairClosed, "the other side closed")
	}()
	ca.run(ctx)
	cb.close(CloseNormal, ReasonPairClosed, "the other side closed")
	s.active.Done()
	<-bDone
}

// errDenied: Config.Denied refused a connection being registered.
var errDenied = errors.New("relay: denied")

// refuse closes a connection that register turned away and counts it.
func (s *Server) refuse(err error, tc Conn) CloseReason {
	if hs, ok := tc.(Handshaker); ok {
		// The peer learns why in a close frame, which needs the handshake.
		if hs.Handshake() != nil {
			tc.Abort()
		}
	}
	if errors.Is(err, errDenied) {
		s.closes[ReasonDenied].Add(1)
		_ = tc.Close(CloseDenied, "denied")
		return ReasonDenied
	}
	s.closes[ReasonShutdown].Add(1)
	_ = tc.Close(CloseGoingAway, "server shutting down")
	return ReasonShutdown
}

// register adds connections, atomically: all or none.
func (s *Server) register(conns ...*conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown {
		return ErrShuttingDown
	}
	if s.cfg.Denied != nil {
		for _, c := range conns {
			if s.cfg.Denied(&c.info) {
				return errDenied
			}
		}
	}
	for _, c := range conns {
		s.registerLocked(c)
	}
	s.updateFairShareLocked()
	return nil
}

func (s *Server) registerLocked(c *conn) {
	s.active.Add(1)
	s.accepted.Add(1)
	s.conns[c] = struct{}{}
	t := s.topicLocked(c.info.Topic)
	if t == nil {
		t = &topicState{name: c.info.Topic}
		empty := []*conn{}
		t.readers.Store(&empty)
		_, remote := s.remote[t.name]
		t.remote.Store(remote)
		s.topics.Store(t.name, t)
		s.numTopics++
	}
	t.n++
	if c.info.CanRead {
		old := *t.readers.Load()
		readers := make([]*conn, len(old), len(old)+1)
		copy(readers, old)
		readers = append(readers, c)
		t.readers.Store(&readers)
		if !c.info.Backpressure {
			t.interested++
			if t.interested == 1 && s.peers != nil {
				s.interest.change(t.name, true)
			}
		}
	}
	c.topic = t
}

// topicLocked returns the state of topic, or nil if it has no connection.
// s.mu must be held for the answer to stay true.
func (s *Server) topicLocked(topic string) *topicState {
	if v, ok := s.topics.Load(topic); ok {
		return v.(*topicState)
	}
	return nil
}

// unregister removes a finished connection and folds its final counters into
// the totals, in one step so that Stats never misses or double-counts it.
func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.updateFairShareLocked()
	s.retired.add(c)
	t := c.topic
	t.n--
	if c.info.CanRead {
		old := *t.readers.Load()
		readers := make([]*conn, 0, len(old))
		for _, r := range old {
			if r != c {
				readers = append(readers, r)
			}
		}
		t.readers.Store(&readers)
		if !c.info.Backpressure {
			t.interested--
			if t.interested == 0 && s.peers != nil {
				s.interest.change(t.name, false)
			}
		}
	}
	if t.n == 0 {
		s.topics.Delete(t.name)
		s.numTopics--
	}
}

// Shutdown closes every connection with CloseGoingAway and refuses new ones.
// It returns when every Accept has returned and the last interest changes
// have been reported to Peers, or when ctx is done, in which case the
// remaining connections are aborted without a close handshake and
// ctx.Err() is returned once their Accept calls have returned.
func (s *Server) Shutdown(ctx context.Context) error { return s.Drain(ctx, 0) }

// Drain is Shutdown with the closes spread evenly over window: new
// connections are refused at once, and the open ones are closed with
// CloseGoingAway a batch at a time, the last batch when window has passed,
// so that their clients reconnect (to other nodes) over the window
// instead of all at the same moment. If ctx ends first, the connections
// not yet closed are closed at once, then handled as by Shutdown.
func (s *Server) Drain(ctx context.Context, window time.Duration) error {
	s.mu.Lock()
	s.shuttingDown = true
	conns := s.connsLocked()
	s.mu.Unlock()
	s.closeSpread(ctx, conns, window)
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		s.interest.wait(ctx.Done())
		return ctx.Err()
	case <-ctx.Done():
	}
	s.mu.Lock()
	conns = s.connsLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.tc.Abort()
	}
	<-done
	return ctx.Err()
}

// maxDrainSteps and drainStepMin bound the batches of a spread close: one per connection, at
// most one per drainStepMin of the window, and at most maxDrainSteps.
const (
	maxDrainSteps = 100
	drainStepMin  = 10 * time.Millisecond
)

// closeSpread closes conns with CloseGoingAway in even batches over
// window: the first batch at once, the last one at window.
func (s *Server) closeSpread(ctx context.Context, conns []*conn, window time.Duration) {
	steps := min(len(conns), maxDrainSteps, int(window/drainStepMin)+1)
	if steps <= 1 {
		steps = 1
	}
	start := time.Now()
	closed := 0
	for i := range steps {
		if i > 0 {
			// Step i of steps-1 intervals ends at i/(steps-1) of the window.
			at := start.Add(window * time.Duration(i) / time.Duration(steps-1))
			t := time.NewTimer(time.Until(at))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				for _, c := range conns[closed:] { // the rest, now
					c.close(CloseGoingAway, ReasonShutdown, "server shutting down")
				}
				return
			}
		}
		upTo := len(conns) * (i + 1) / steps
		for _, c := range conns[closed:upTo] {
			c.close(CloseGoingAway, ReasonShutdown, "server shutting down")
		}
		closed = upTo
	}
}

func (s *Server) connsLocked() []*conn {
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// CloseWhere closes, with code and reason, every connection whose Info
// satisfies match, and returns how many it closed. It does not wait for them.
func (s *Server) CloseWhere(match func(*Info) bool, code CloseCode, why CloseReason, reason string) int {
	s.mu.Lock()
	var hit []*conn
	for c := range s.conns {
		if match(&c.info) {
			hit = append(hit, c)
		}
	}
	s.mu.Unlock()
	for _, c := range hit {
		c.close(code, why, reason)
	}
	return len(hit)
}

// Publish delivers m, as the server, to every reader of topic on this node,
// under the same queueing rules as a peer's message. It is node-local: the
// message is not offered to Peers (the server's reports describe this
// node). It returns how many readers it was queued for. Like a peer's
// message, m.Data must not be modified after.
func (s *Server) Publish(topic string, m Message) int {
	v, ok := s.topics.Load(topic)
	if !ok {
		return 0
	}
	readers := *v.(*topicState).readers.Load()
	for _, r := range readers {
		r.enqueue(m, nil)
	}
	return len(readers)
}

// PublishShared delivers m, as the server, like a message a local writer
// wrote to topic: it is queued for every local reader of topic under the
// same rules (queue bound, node budget, SlowConsumer; drops counted under
// the same reasons) and then offered once to Peers.Forward while another
// node reads the topic, so that readers on other nodes get it too. Unlike
// Publish it never blocks: Backpressure readers (pairs, private to their
// node) are left out, as Deliver leaves them out. It returns how many
// local readers m was queued for and whether it was handed to Peers. Like
// a writer's message, m.Data must not be modified after. It allocates
// nothing when topic has local connections.
func (s *Server) PublishShared(topic string, m Message) (queued int, forwarded bool) {
	s.sharedIn.Add(1)
	s.sharedBytesIn.Add(uint64(len(m.Data)))
	var peers Peers
	if v, ok := s.topics.Load(topic); ok {
		t := v.(*topicState)
		queued = t.queueNonBlocking(m)
		if t.remote.Load() {
			peers = s.peers // set before remote could be: read-only now
		}
	} else {
		// No local connection, so no topicState to hold the remote flag.
		s.mu.Lock()
		if _, remote := s.remote[topic]; remote {
			peers = s.peers
		}
		s.mu.Unlock()
	}
	if peers == nil {
		return queued, false
	}
	peers.Forward(topic, m)
	return queued, true
}

// Readers returns how many connections on this node may read topic now.
func (s *Server) Readers(topic string) int {
	if v, ok := s.topics.Load(topic); ok {
		return len(*v.(*topicState).readers.Load())
	}
	return 0
}

// Stats are the server's counters since it started.
type Stats struct {
	Connections   int    // open now
	Topics        int    // with at least one connection now
	Accepted      uint64 // connections accepted in total
	MessagesIn    uint64 // messages received from peers, and published with PublishShared
	BytesIn       uint64
	RemoteIn      uint64 // messages from other nodes (Deliver)
	SharedIn      uint64 // of MessagesIn, those the server published for a client (PublishShared: HTTP publish)
	MessagesOut   uint64 // messages written to peers (deliveries)
	BytesOut      uint64
	Drops         map[string]uint64 // by DropReason name
	Closes        map[string]uint64 // by CloseReason name
	SendQueueSize int               // configured per-connection bound
	QueuedBytes   int64             // in all send queues now, counted as QueueBudget counts them
	QueueBudget   int64             // configured node-wide bound on QueuedBytes
	// CoalescedFrames counts messages written to Info.Coalesce connections
	// that merged several queued messages; CoalescedMessages counts the
	// messages merged into them (so CoalescedMessages - CoalescedFrames
	// frames were saved).
	CoalescedFrames, CoalescedMessages uint64
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Connections: len(s.conns), Topics: s.numTopics}
	t := s.retired
	for c := range s.conns {
		t.add(c)
	}
	s.mu.Unlock()
	st.Accepted = s.accepted.Load()
	st.MessagesIn, st.BytesIn, st.MessagesOut, st.BytesOut = t.msgsIn, t.bytesIn, t.msgsOut, t.bytesOut
	st.RemoteIn = s.remoteIn.Load()
	st.SharedIn = s.sharedIn.Load()
	st.MessagesIn += st.SharedIn
	st.BytesIn += s.sharedBytesIn.Load()
	st.Drops = make(map[string]uint64, NumDropReasons)
	for i, n := range t.drops {
		st.Drops[DropReason(i).String()] = n + s.nodeDrops[i].Load()
	}
	st.Closes = make(map[string]uint64, numCloseReasons)
	for i := range s.closes {
		st.Closes[CloseReason(i).String()] = s.closes[i].Load()
	}
	st.SendQueueSize = s.cfg.SendQueueBytes
	st.QueuedBytes = s.queuedBytes.Load()
	st.QueueBudget = s.cfg.QueueBudgetBytes
	st.CoalescedFrames, st.CoalescedMessages = s.coalescedFrames.Load(), s.coalescedMessages.Load()
	return st
}

// ConnStatus describes one open connection.
type ConnStatus struct {
	ID            uint64
	Info          Info
	ConnectedAt   time.Time
	MessagesIn    uint64
	BytesIn       uint64
	MessagesOut   uint64
	BytesOut      uint64
	Drops         uint64 // all reasons
	DropsByReason [NumDropReasons]uint64
	QueuedBytes   int
	LastActivity  time.Time // last message in or out (ConnectedAt if none)
}

// Connections returns the status of every open connection, oldest first
// (in the order they were accepted).
func (s *Server) Connections() []ConnStatus {
	s.mu.Lock()
	conns := s.connsLocked()
	s.mu.Unlock()
	slices.SortFunc(conns, func(a, b *conn) int { return cmp.Compare(a.id, b.id) })
	out := make([]ConnStatus, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.status())
	}
	return out
}
