// Package membus is the in-memory cluster.Bus: the bus of a node on its
// own (New), and of a whole cluster inside one process for tests (the
// nodes that Join one Network see each other). It gives every guarantee of
// the cluster.Bus contract and passes cluster/bustest.
//
// Each subscription has a queue bounded in messages and bytes (Options);
// a message that does not fit is dropped and counted, and Publish never
// waits. A subscription's delivery goroutine runs only while its queue
// holds messages, so an idle subscription costs no goroutine. A published
// message is shared, not copied, by its receivers. Close ends the node's
// subscriptions and watches and returns once none of its goroutines runs.
//
// Locks: Network.mu guards the membership and the subscription lists;
// Publish holds it for reading while it queues. A subscription's or
// watcher's mu is taken after Network.mu, never before; handlers and
// watch functions are called with no lock held.
package membus

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
)

// Defaults of Options fields left zero (those of the NATS Go client).
const (
	DefaultMaxPendingMsgs  = 65536
	DefaultMaxPendingBytes = 64 << 20
)

// Options bound each subscription's queue. Zero means the default.
type Options struct {
	MaxPendingMsgs  int // messages queued for one subscription; default 65,536
	MaxPendingBytes int // their Data bytes; default 64 MiB
}

// Network is the medium the nodes of one in-memory cluster share.
type Network struct {
	opts Options

	mu    sync.RWMutex
	nodes map[string]*Bus            // guarded by mu; nodes joined and not closed
	subs  map[string][]*subscription // guarded by mu; every node's, by subject
}

// NewNetwork returns an empty network.
func NewNetwork(opts Options) (*Network, error) {
	switch {
	case opts.MaxPendingMsgs < 0:
		return nil, fmt.Errorf("membus: MaxPendingMsgs %d: must not be negative; 0 means %d", opts.MaxPendingMsgs, DefaultMaxPendingMsgs)
	case opts.MaxPendingBytes < 0:
		return nil, fmt.Errorf("membus: MaxPendingBytes %d: must not be negative; 0 means %d", opts.MaxPendingBytes, DefaultMaxPendingBytes)
	}
	if opts.MaxPendingMsgs == 0 {
		opts.MaxPendingMsgs = DefaultMaxPendingMsgs
	}
	if opts.MaxPendingBytes == 0 {
		opts.MaxPendingBytes = DefaultMaxPendingBytes
	}
	return &Network{opts: opts, nodes: map[string]*Bus{}, subs: map[string][]*subscription{}}, nil
}

// New returns the bus of a node on its own: a network of one.
func New(nodeID string) (*Bus, error) {
	n, err := NewNetwork(Options{})
	if err != nil {
		return nil, err
	}
	return n.Join(nodeID)
}

// Join adds a node with id to the network and returns its bus. The other
// members' watches report it up.
func (n *Network) Join(id string) (*Bus, error) {
	if err := cluster.ValidSubject(id); err != nil || containsDot(id) {
		return nil, fmt.Errorf("membus: node id %q: want one subject token", id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, dup := n.nodes[id]; dup {
		return nil, fmt.Errorf("membus: node %q already joined", id)
	}
	b := &Bus{net: n, self: cluster.Member{ID: id, Started: time.Now()}, done: make(chan struct{}),
		subs: map[*subscription]struct{}{}, watchers: map[*watcher]struct{}{}}
	n.nodes[id] = b
	n.announceLocked(cluster.MemberEvent{Member: b.self, Up: true})
	return b, nil
}

func containsDot(s string) bool { return slices.Contains([]byte(s), '.') }

// announceLocked queues ev for every watcher of every node. n.mu must be
// held for writing, so that all watchers see changes in the same order.
func (n *Network) announceLocked(ev cluster.MemberEvent) {
	for _, b := range n.nodes {
		for w := range b.watchers {
			w.push(ev)
		}
	}
}

// Bus is one node's connection to a Network.
type Bus struct {
	net  *Network
	self cluster.Member
	done chan struct{} // closed by Close: pending requests give up

	closed   bool                       // guarded by net.mu
	subs     map[*subscription]struct{} // guarded by net.mu; this node's
	watchers map[*watcher]struct{}      // guarded by net.mu; this node's
	running  sync.WaitGroup             // this node's delivery and watch goroutines
	inbox    atomic.Uint64              // the last request's inbox number
}

var _ cluster.Bus = (*Bus)(nil)

// NodeID returns the id the node joined with.
func (b *Bus) NodeID() string { return b.self.ID }

// Publish queues m for every other node's subscriptions of m.Subject.
func (b *Bus) Publish(m *cluster.Msg) error {
	_, err := b.publish(m)
	return err
}

// publish is Publish, also reporting how many subscriptions m was offered to.
func (b *Bus) publish(m *cluster.Msg) (int, error) {
	if err := cluster.ValidSubject(m.Subject); err != nil {
		return 0, err
	}
	b.net.mu.RLock()
	defer b.net.mu.RUnlock()
	if b.closed {
		return 0, cluster.ErrClosed
	}
	n := 0
	for _, s := range b.net.subs[m.Subject] {
		if s.bus != b { // no echo
			s.push(m)
			n++
		}
	}
	return n, nil
}

// Subscribe calls h with every message another node publishes on subject.
func (b *Bus) Subscribe(subject string, h cluster.Handler) (cluster.Subscription, error) {
	if err := cluster.ValidSubject(subject); err != nil {
		return nil, err
	}
	s := &subscription{bus: b, subject: subject, h: h}
	b.net.mu.Lock()
	defer b.net.mu.Unlock()
	if b.closed {
		return nil, cluster.ErrClosed
	}
	b.net.subs[subject] = append(b.net.subs[subject], s)
	b.subs[s] = struct{}{}
	return s, nil
}

// Request publishes m with an inbox of its own as Reply and returns the
// first answer.
func (b *Bus) Request(ctx context.Context, m *cluster.Msg) (*cluster.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	inbox := "_INBOX." + b.self.ID + "." + strconv.FormatUint(b.inbox.Add(1), 10)
	answers := make(chan *cluster.Msg, 1)
	sub, err := b.Subscribe(inbox, func(a *cluster.Msg) {
		select {
		case answers <- a:
		default: // not the first answer
		}
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	req := *m
	req.Reply = inbox
	n, err := b.publish(&req)
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return nil, cluster.ErrNoResponders
	}
	select {
	case a := <-answers:
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.done:
		return nil, cluster.ErrClosed
	}
}

// Members returns the nodes joined now, ordered by ID.
func (b *Bus) Members() []cluster.Member {
	b.net.mu.RLock()
	out := make([]cluster.Member, 0, len(b.net.nodes))
	for _, n := range b.net.nodes {
		out = append(out, n.self)
	}
	b.net.mu.RUnlock()
	slices.SortFunc(out, func(x, y cluster.Member) int { return cmp.Compare(x.ID, y.ID) })
	return out
}

// WatchMembers reports the members up now, then each change.
func (b *Bus) WatchMembers(fn func(cluster.MemberEvent)) (stop func()) {
	w := &watcher{bus: b, fn: fn}
	b.net.mu.Lock()
	if b.closed {
		b.net.mu.Unlock()
		return func() {}
	}
	members := make([]cluster.Member, 0, len(b.net.nodes))
	for _, n := range b.net.nodes {
		members = append(members, n.self)
	}
	slices.SortFunc(members, func(x, y cluster.Member) int { return cmp.Compare(x.ID, y.ID) })
	for _, m := range members {
		w.push(cluster.MemberEvent{Member: m, Up: true})
	}
	b.watchers[w] = struct{}{}
	b.net.mu.Unlock()
	return func() {
		b.net.mu.Lock()
		delete(b.watchers, w)
		b.net.mu.Unlock()
		w.stop()
		w.calls.Wait()
	}
}

// Close leaves the network: the other members see this node go down.
func (b *Bus) Close() error {
	n := b.net
	n.mu.Lock()
	if b.closed {
		n.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.done)
	delete(n.nodes, b.self.ID)
	for s := range b.subs {
		n.removeLocked(s)
		s.close()
	}
	for w := range b.watchers {
		w.stop()
	}
	b.subs, b.watchers = nil, nil
	n.announceLocked(cluster.MemberEvent{Member: b.self, Up: false})
	n.mu.Unlock()
	b.running.Wait()
	return nil
}

// removeLocked takes s out of the subject's list. n.mu must be held for
// writing.
func (n *Network) removeLocked(s *subscription) {
	list := n.subs[s.subject]
	i := slices.Index(list, s)
	if i < 0 {
		return
	}
	if len(list) == 1 {
		delete(n.subs, s.subject)
		return
	}
	n.subs[s.subject] = slices.Delete(slices.Clone(list), i, i+1)
}

// subscription is one handler's interest in a subject, with its queue.
type subscription struct {
	bus     *Bus
	subject string
	h       cluster.Handler
	dropped atomic.Uint64

	mu      sync.Mutex
	q       []*cluster.Msg // guarded by mu; q[head:] is queued, oldest first
	head    int            // guarded by mu
	bytes   int            // guarded by mu; Data bytes in q[head:]
	running bool           // guarded by mu; a delivery goroutine runs
	closed  bool           // guarded by mu
}

// push queues m, or drops and counts it if the queue is full, and makes
// sure a delivery goroutine runs. Called under Network.mu (read).
func (s *subscription) push(m *cluster.Msg) {
	opts := &s.bus.net.opts
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if len(s.q)-s.head >= opts.MaxPendingMsgs || s.bytes+len(m.Data) > opts.MaxPendingBytes {
		s.dropped.Add(1)
		return
	}
	if s.head > 0 && len(s.q) == cap(s.q) && s.head >= len(s.q)/2 {
		// Reclaim the delivered prefix instead of growing the array.
		k := copy(s.q, s.q[s.head:])
		clear(s.q[k:])
		s.q, s.head = s.q[:k], 0
	}
	s.q = append(s.q, m)
	s.bytes += len(m.Data)
	if !s.running {
		s.running = true
		s.bus.running.Add(1)
		go s.deliver()
	}
}

// deliver calls the handler with each queued message in turn and exits
// when the queue is empty or the subscription ends.
func (s *subscription) deliver() {
	defer s.bus.running.Done()
	for {
		s.mu.Lock()
		if s.closed || s.head == len(s.q) {
			s.running = false
			s.q, s.head = s.q[:0], 0
			s.mu.Unlock()
			return
		}
		m := s.q[s.head]
		s.q[s.head] = nil
		s.head++
		s.bytes -= len(m.Data)
		s.mu.Unlock()
		s.h(m)
	}
}

// close ends deliveries and discards what is queued.
func (s *subscription) close() {
	s.mu.Lock()
	s.closed = true
	clear(s.q)
	s.q, s.head, s.bytes = nil, 0, 0
	s.mu.Unlock()
}

func (s *subscription) Unsubscribe() error {
	n := s.bus.net
	n.mu.Lock()
	if _, ok := s.bus.subs[s]; ok {
		delete(s.bus.subs, s)
		n.removeLocked(s)
	}
	n.mu.Unlock()
	s.close()
	return nil
}

func (s *subscription) Dropped() uint64 { return s.dropped.Load() }

// watcher passes membership events to one watch function, in order, on a
// goroutine that runs while events are queued. The queue holds one event
// per membership change, which the network's members make rarely.
type watcher struct {
	bus   *Bus
	fn    func(cluster.MemberEvent)
	calls sync.WaitGroup // the delivery goroutine, while it runs

	mu      sync.Mutex
	q       []cluster.MemberEvent // guarded by mu
	running bool                  // guarded by mu
	stopped bool                  // guarded by mu
}

func (w *watcher) push(ev cluster.MemberEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.q = append(w.q, ev)
	if !w.running {
		w.running = true
		w.calls.Add(1)
		w.bus.running.Add(1)
		go w.deliver()
	}
}

func (w *watcher) deliver() {
	defer w.bus.running.Done()
	defer w.calls.Done()
	for {
		w.mu.Lock()
		if w.stopped || len(w.q) == 0 {
			w.running = false
			w.q = nil
			w.mu.Unlock()
			return
		}
		ev := w.q[0]
		w.q = w.q[1:]
		w.mu.Unlock()
		w.fn(ev)
	}
}

func (w *watcher) stop() {
	w.mu.Lock()
	w.stopped = true
	w.q = nil
	w.mu.Unlock()
}
