package relay

import (
	"context"
	"errors"
	"sync"
)

// Peers connects a Server to the other nodes of a cluster. The relay owns
// this interface; internal/cluster implements it over its bus. Install one
// with Server.SetPeers.
//
// Interest reports that topic gained its first local reader (on) or lost
// its last (off). Only readers that are not Backpressure count: a pair's
// topic is private to its node. The calls are made one at a time, on a
// goroutine of the relay's, never under Server.mu, and in order per topic:
// for each topic they alternate on, off, on, … starting with on, and once
// the relay is quiet the last call for a topic states whether it has local
// readers now. Changes that cancel out before they were reported are not
// reported. Interest may take its time (subscribe, tell other nodes): that
// delays later interest reports, never a connection or a message.
//
// Forward offers other nodes a message a local connection wrote to topic.
// The relay calls it once per message (not once per reader), after queueing
// the message for the local readers, on the sender's read loop, and only
// while SetRemoteInterest says another node reads the topic. Calls for one
// sender are in the order it wrote; calls for different senders may be
// concurrent. Forward must not block: it delays the sender. m.Data is shared
// with the local readers and must not be modified; it may be retained.
type Peers interface {
	Interest(topic string, on bool)
	Forward(topic string, m Message)
}

// Barrier is implemented by Peers that can tell when the other nodes know
// of a local reader: Accept calls it for a new reader whose transport holds
// its handshake (Handshaker), after registering it and before completing
// the handshake, so that what a writer on another node sends after the
// reader's handshake reaches it. Barrier returns once every other node
// that answers has acknowledged that this node reads topic, or when ctx is
// done (a node that does not answer is not waited for: Peers bounds the
// wait itself). It may be called concurrently.
type Barrier interface {
	Barrier(ctx context.Context, topic string)
}

// SetPeers connects the server to other nodes through p. It must be called
// once, before the first connection is accepted; later, it returns an
// error and changes nothing.
func (s *Server) SetPeers(p Peers) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers != nil || s.accepted.Load() > 0 {
		return errors.New("relay: SetPeers must be called once, before the first connection")
	}
	s.peers = p
	s.interest.peers = p
	return nil
}

// SetRemoteInterest records whether some other node has readers of topic
// (on) or none has (off). While on, each message a local connection writes
// to topic is offered to Peers.Forward. The Peers implementation calls it,
// in order per topic; it does nothing without Peers. The topic need not have
// local connections: the state applies to connections that come later.
func (s *Server) SetRemoteInterest(topic string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers == nil {
		return
	}
	if on {
		s.remote[topic] = struct{}{}
	} else {
		delete(s.remote, topic)
	}
	if t := s.topicLocked(topic); t != nil {
		t.remote.Store(on)
	}
}

// Deliver queues m, a message written on another node, for every local
// reader of topic under the same rules as a local message: each reader's
// queue and the node's budget bound it, and what does not fit is dropped or
// closes the reader as SlowConsumer says, counted under the same reasons.
// No reader is left out as its sender. Deliver never blocks: Backpressure
// readers (pairs, private to their node) are not offered remote messages.
// Per-source order is the caller's: call Deliver for one source's messages
// one after another. It returns how many readers m was queued for; a
// message that found none is counted as DropNoReaders. Like a local
// message, m.Data is shared by the readers and must not be modified.
func (s *Server) Deliver(topic string, m Message) int {
	s.remoteIn.Add(1)
	n := 0
	if v, ok := s.topics.Load(topic); ok {
		n = v.(*topicState).queueNonBlocking(m)
	}
	if n == 0 {
		s.nodeDrops[DropNoReaders].Add(1)
	}
	return n
}

// queueNonBlocking queues m for every reader of t that is not a
// Backpressure one (those are pairs, private to their node, and would make
// the caller wait) and returns how many.
func (t *topicState) queueNonBlocking(m Message) int {
	n := 0
	for _, r := range *t.readers.Load() {
		if r.space == nil {
			r.enqueue(m, nil)
			n++
		}
	}
	return n
}

// CountRemoteDrops counts n messages from other nodes that the Peers
// implementation dropped before they could reach a reader, under why:
// DropBusLost for messages lost on the way (a gap in a source's sequence),
// DropNoReaders for one that arrived after this node withdrew its interest.
// Other reasons are connections' and are ignored here.
func (s *Server) CountRemoteDrops(why DropReason, n uint64) {
	if why == DropBusLost || why == DropNoReaders {
		s.nodeDrops[why].Add(n)
	}
}

// interestReports hands changes of local interest to Peers on a goroutine
// of its own, so that a slow Peers delays later reports and nothing else.
// Pending changes are coalesced per topic (one entry per topic, holding the
// latest state), so the queue is bounded by the number of topics, and
// enqueueing never waits for Peers.
type interestReports struct {
	peers Peers // set by SetPeers under Server.mu before any change; read-only after

	mu      sync.Mutex
	pending map[string]bool // guarded by mu; each queued topic's latest local interest
	order   []string        // guarded by mu; the topics in pending, oldest change first
	running bool            // guarded by mu; a report loop is running
	loops   sync.WaitGroup  // the report loop, while one runs

	// reported holds the topics last reported on. Owned by the running
	// report loop; handed from one loop to the next through mu.
	reported map[string]struct{}
}

// change records that topic's local interest is now on. It is called under
// Server.mu (lock order: Server.mu, then interestReports.mu) and never
// blocks; a report loop, started if none runs, passes it on.
func (r *interestReports) change(topic string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = make(map[string]bool)
		r.reported = make(map[string]struct{})
	}
	if _, queued := r.pending[topic]; !queued {
		r.order = append(r.order, topic)
	}
	r.pending[topic] = on
	if !r.running {
		r.running = true
		r.loops.Add(1)
		go r.loop()
	}
}

// loop reports queued changes, oldest first, and exits when none is left.
func (r *interestReports) loop() {
	defer r.loops.Done()
	for {
		r.mu.Lock()
		if len(r.order) == 0 {
			r.order, r.running = nil, false
			r.mu.Unlock()
			return
		}
		topic := r.order[0]
		r.order[0] = ""
		r.order = r.order[1:]
		on := r.pending[topic]
		delete(r.pending, topic)
		r.mu.Unlock()

		if _, was := r.reported[topic]; was == on {
			continue // changes that cancelled out
		}
		if on {
			r.reported[topic] = struct{}{}
		} else {
			delete(r.reported, topic)
		}
		r.peers.Interest(topic, on)
	}
}

// wait returns when no report loop runs, or when stop is closed.
func (r *interestReports) wait(stop <-chan struct{}) {
	done := make(chan struct{})
	go func() { r.loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-stop:
	}
}

// ReadElsewhere reports whether another node reads topic now, as far as
// Peers has said (SetRemoteInterest).
func (s *Server) ReadElsewhere(topic string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.remote[topic]
	return ok
}
