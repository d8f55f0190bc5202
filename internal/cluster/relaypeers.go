package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// Headers of a relayed message (DESIGN.md §6).
const (
	HeaderSource = "Sb-Source" // the node whose connection wrote it
	HeaderKind   = "Sb-Kind"   // "text" or "binary" (relay.MessageType.String)
	HeaderSeq    = "Sb-Seq"    // the source's sequence number on the subject, from 1
)

// Defaults of RelayConfig fields left zero.
const (
	DefaultUnsubscribeDelay = time.Second
	DefaultAnnounceTimeout  = 2 * time.Second
	DefaultAnnounceRetry    = time.Second
	// DefaultBarrierTimeout bounds how long a new reader's handshake waits
	// for the other members' acknowledgement: an answer takes well under a
	// millisecond, so a member that takes this long is more likely dead
	// (and not yet known to be down) than slow.
	DefaultBarrierTimeout = 200 * time.Millisecond
)

// RelayConfig configures NewRelayPeers. Zero values mean the defaults.
type RelayConfig struct {
	Bus   Bus           // required
	Relay *relay.Server // required; the caller installs the result with SetPeers
	// Prefix is the first token of every subject; default DefaultPrefix.
	Prefix string
	// UnsubscribeDelay is how long a topic's subscription outlives its
	// last local reader, so that a reader who comes back soon causes no
	// churn on the bus. Default 1 s.
	UnsubscribeDelay time.Duration
	// AnnounceTimeout bounds each interest announcement to another node;
	// AnnounceRetry is how long a node that did not answer waits for the
	// next try. Defaults 2 s and 1 s.
	AnnounceTimeout time.Duration
	AnnounceRetry   time.Duration
	// BarrierTimeout bounds Barrier; default DefaultBarrierTimeout.
	BarrierTimeout time.Duration
	Logger         *slog.Logger // nil discards
}

// RelayPeers is the relay's Peers over a Bus: it carries a node's topics
// to and from the other nodes.
//
// Data plane: while a topic has local readers, the node subscribes to the
// topic's subject (TopicSubject). A message a local connection writes is
// published on that subject once, with the headers Sb-Source (this node),
// Sb-Kind and Sb-Seq (a sequence per subject on this node), and only while
// some other node reads the topic: so one bus message per message, which
// the bus hands to each node with readers, never one per reader; when no
// other node is interested, nothing is published and nothing allocated. A
// message received on a subscription goes to the relay's Deliver; a gap in
// a source's sequence is counted as relay.DropBusLost. A node never takes
// its own messages (the bus does not echo, and the source is checked).
//
// Interest plane: a node tells every other member which topics it reads,
// with requests on <prefix>.node.<id>.sync: its whole set when it sees a
// member come up (asking for the member's in return), then each change.
// The answer is the subscribe barrier: once a member has answered, it
// knows this node subscribed and publishes to it. One goroutine sends all
// announcements, so each member receives them in the order they were
// decided; a member that does not answer gets the whole set again after
// AnnounceRetry. A member that goes down takes its interest with it.
type RelayPeers struct {
	bus   Bus
	relay *relay.Server
	cfg   RelayConfig
	self  string
	log   *slog.Logger
	// ctx is cancelled by Close: an announcement in flight gives up.
	ctx    context.Context
	cancel context.CancelFunc

	syncSub   Subscription // this node's sync subject
	stopWatch func()
	announcer sync.WaitGroup
	kick      chan struct{} // wakes the announcer; room for one token

	// out holds a *outTopic for each topic another node reads; Forward
	// loads it without a lock.
	out sync.Map

	mu sync.Mutex
	// acks is closed and replaced when what the members acknowledged, or
	// the local topics, or the members change (Barrier waits on it).
	acks    chan struct{}          // guarded by mu
	local   map[string]*localTopic // guarded by mu; topics this node subscribes to
	members map[string]*member     // guarded by mu; the other nodes up
	remote  map[string]int         // guarded by mu; per topic, how many other nodes read it
	done    bool                   // guarded by mu; Close has begun

	forwarded       atomic.Uint64
	publishErrors   atomic.Uint64
	received        atomic.Uint64
	barrierTimeouts atomic.Uint64
}

// outTopic is what Forward needs to publish a topic's messages.
type outTopic struct {
	subject string
	mu      sync.Mutex // keeps sequence numbers in publishing order
	seq     uint64     // guarded by mu; the last number published
}

// localTopic is this node's subscription to a topic it reads.
type localTopic struct {
	topic   string
	subject string
	sub     Subscription // guarded by RelayPeers.mu
	// expire unsubscribes UnsubscribeDelay after the last local reader
	// left; nil while the topic has local readers. gen tells a stale
	// timer from the current one. Both guarded by RelayPeers.mu.
	expire *time.Timer
	gen    uint64

	mu     sync.Mutex        // held while a message is handed to the relay
	active bool              // guarded by mu; false once unsubscribed
	last   map[string]uint64 // guarded by mu; per source node, the last sequence number seen
}

// member is another node, what it reads, and what it has yet to be told.
type member struct {
	topics map[string]struct{} // the topics it said it reads
	// Announcements owed to it: the whole set (full, asking for its own
	// in return if hello), or the changes since the last one.
	full    bool
	hello   bool
	changes map[string]bool
	retryAt time.Time // no announcement before this (it did not answer)
	// told: it answered an announcement of this node's whole interest;
	// heard: it sent its own whole interest. Both: the two know what the
	// other reads (Synced).
	told, heard bool
	// acked are the topics it has acknowledged that this node reads: it
	// publishes their messages here (Barrier).
	acked map[string]struct{}
	// suspect: a Barrier timed out waiting for it (dead, not yet known to
	// be down, or very slow); Barriers do not wait for it again until it
	// answers an announcement.
	suspect bool
}

// announcement is the body of a sync request.
type announcement struct {
	// Full: On is the sender's whole interest; forget what it said before.
	Full bool `json:"full,omitempty"`
	// Hello: the sender wants the receiver's whole interest in return.
	Hello bool     `json:"hello,omitempty"`
	On    []string `json:"on,omitempty"`
	Off   []string `json:"off,omitempty"`
}

// SyncService is the node service (NodeSubject) that takes announcements.
const SyncService = "sync"

// NewRelayPeers starts the relay's Peers over cfg.Bus: it takes
// announcements from other nodes and watches the members. Install it with
// cfg.Relay.SetPeers; Close it after the relay has shut down.
func NewRelayPeers(cfg RelayConfig) (*RelayPeers, error) {
	switch {
	case cfg.Bus == nil || cfg.Relay == nil:
		return nil, errors.New("cluster: RelayPeers needs a Bus and a relay")
	case cfg.UnsubscribeDelay < 0 || cfg.AnnounceTimeout < 0 || cfg.AnnounceRetry < 0 || cfg.BarrierTimeout < 0:
		return nil, errors.New("cluster: RelayPeers durations must not be negative; 0 means the default")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.UnsubscribeDelay == 0 {
		cfg.UnsubscribeDelay = DefaultUnsubscribeDelay
	}
	if cfg.AnnounceTimeout == 0 {
		cfg.AnnounceTimeout = DefaultAnnounceTimeout
	}
	if cfg.AnnounceRetry == 0 {
		cfg.AnnounceRetry = DefaultAnnounceRetry
	}
	if cfg.BarrierTimeout == 0 {
		cfg.BarrierTimeout = DefaultBarrierTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := ValidSubject(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("cluster: subject prefix: %w", err)
	}
	p := &RelayPeers{
		bus: cfg.Bus, relay: cfg.Relay, cfg: cfg, self: cfg.Bus.NodeID(), log: cfg.Logger, kick: make(chan struct{}, 1),
		local: map[string]*localTopic{}, members: map[string]*member{}, remote: map[string]int{},
		acks: make(chan struct{}),
	}
	sub, err := p.bus.Subscribe(NodeSubject(cfg.Prefix, p.self, SyncService), p.onSync)
	if err != nil {
		return nil, fmt.Errorf("cluster: subscribe to announcements: %w", err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.syncSub = sub
	p.announcer.Add(1)
	go p.announce()
	p.stopWatch = p.bus.WatchMembers(p.onMember)
	return p, nil
}

var _ relay.Peers = (*RelayPeers)(nil)

// Interest subscribes to topic's subject when its first local reader
// arrives and tells the other nodes; it unsubscribes UnsubscribeDelay after
// the last one left, unless one came back.
func (p *RelayPeers) Interest(topic string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	lt := p.local[topic]
	if !on {
		if lt != nil && lt.expire == nil {
			lt.gen++
			gen := lt.gen
			lt.expire = time.AfterFunc(p.cfg.UnsubscribeDelay, func() { p.expire(lt, gen) })
		}
		return
	}
	if lt != nil { // back within the delay: keep the subscription
		if lt.expire != nil {
			lt.expire.Stop()
			lt.expire = nil
		}
		return
	}
	subject, err := TopicSubject(p.cfg.Prefix, topic)
	if err != nil {
		p.log.Warn("cluster: topic cannot travel between nodes", "err", err)
		return
	}
	lt = &localTopic{topic: topic, subject: subject, active: true, last: map[string]uint64{}}
	sub, err := p.bus.Subscribe(subject, lt.handler(p))
	if err != nil {
		p.log.Warn("cluster: subscribe to a topic", "topic", topic, "err", err)
		return
	}
	lt.sub = sub
	p.local[topic] = lt
	p.owe(topic, true)
	p.ackedLocked()
}

// ackedLocked wakes the Barrier waits. p.mu must be held.
func (p *RelayPeers) ackedLocked() {
	close(p.acks)
	p.acks = make(chan struct{})
}

// Barrier implements relay.Barrier: it returns once every other member
// that answers has acknowledged that this node reads topic (so it
// publishes the topic's messages here), or after BarrierTimeout, or when
// ctx is done. A member whose last announcement failed is not waited for.
func (p *RelayPeers) Barrier(ctx context.Context, topic string) {
	if _, err := TopicSubject(p.cfg.Prefix, topic); err != nil {
		return // the topic does not travel between nodes
	}
	timeout := time.NewTimer(p.cfg.BarrierTimeout)
	defer timeout.Stop()
	for {
		p.mu.Lock()
		met, acks := p.barrierMetLocked(topic, time.Now()), p.acks
		p.mu.Unlock()
		if met {
			return
		}
		select {
		case <-acks:
		case <-timeout.C:
			p.barrierTimeouts.Add(1)
			p.mu.Lock()
			for id, mb := range p.members {
				if !p.memberAckedLocked(mb, topic, time.Now()) {
					mb.suspect = true
					p.log.Debug("cluster: a reader's barrier timed out; not waiting for this member until it answers", "topic", topic, "member", id)
				}
			}
			p.mu.Unlock()
			return
		case <-ctx.Done():
			return
		}
	}
}

// barrierMetLocked reports whether every member that answers has
// acknowledged that this node reads topic. p.mu must be held.
func (p *RelayPeers) barrierMetLocked(topic string, now time.Time) bool {
	if p.done || len(p.members) == 0 {
		return true
	}
	if _, ok := p.local[topic]; !ok {
		return false // the relay has not reported the reader yet
	}
	for _, mb := range p.members {
		if !p.memberAckedLocked(mb, topic, now) {
			return false
		}
	}
	return true
}

// memberAckedLocked reports whether mb has acknowledged topic, or is not
// waited for: its last announcement failed, or a Barrier timed out on it
// since its last answer. p.mu must be held.
func (p *RelayPeers) memberAckedLocked(mb *member, topic string, now time.Time) bool {
	_, ok := mb.acked[topic]
	return ok || mb.suspect || now.Before(mb.retryAt)
}

// expire ends lt's subscription if no local reader came back since the
// timer of generation gen was set.
func (p *RelayPeers) expire(lt *localTopic, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.local[lt.topic] != lt || lt.expire == nil || lt.gen != gen {
		return
	}
	delete(p.local, lt.topic)
	lt.end()
	p.owe(lt.topic, false)
}

// end unsubscribes lt; a message its handler has not yet handed to the
// relay is dropped (counted as no_readers), so that a later subscription
// to the topic cannot deliver it twice. RelayPeers.mu must be held.
func (lt *localTopic) end() {
	lt.mu.Lock()
	lt.active = false
	lt.mu.Unlock()
	lt.sub.Unsubscribe()
}

// handler returns the subscription handler of lt: it hands each message
// from another node to the relay, in the order the bus delivers them, and
// counts gaps in each source's sequence.
func (lt *localTopic) handler(p *RelayPeers) Handler {
	return func(m *Msg) {
		src := m.Header[HeaderSource]
		if src == p.self {
			return // not ours to deliver again (the bus should not echo)
		}
		var typ relay.MessageType
		switch m.Header[HeaderKind] {
		case "text":
			typ = relay.Text
		case "binary":
			typ = relay.Binary
		default:
			p.log.Warn("cluster: relayed message of unknown kind dropped", "source", src, "kind", m.Header[HeaderKind])
			p.relay.CountRemoteDrops(relay.DropBusLost, 1)
			return
		}
		seq, _ := strconv.ParseUint(m.Header[HeaderSeq], 10, 64)
		p.received.Add(1)
		lt.mu.Lock()
		defer lt.mu.Unlock()
		if !lt.active {
			p.relay.CountRemoteDrops(relay.DropNoReaders, 1)
			return
		}
		// A number at or below the last one seen means the source started
		// a new sequence (it restarted, or stopped publishing the topic for
		// a while): a new baseline, not a loss.
		if last := lt.last[src]; last != 0 && seq > last+1 {
			p.relay.CountRemoteDrops(relay.DropBusLost, seq-last-1)
		}
		lt.last[src] = seq
		p.relay.Deliver(lt.topic, relay.Message{Type: typ, Data: m.Data})
	}
}

// Forward publishes m on topic's subject once, for all the other nodes
// that read it. The relay calls it only while one does.
func (p *RelayPeers) Forward(topic string, m relay.Message) {
	v, ok := p.out.Load(topic)
	if !ok {
		return // the last remote reader just left
	}
	o := v.(*outTopic)
	o.mu.Lock()
	o.seq++
	err := p.bus.Publish(&Msg{Subject: o.subject, Data: m.Data, Header: Header{
		HeaderSource: p.self, HeaderKind: m.Type.String(), HeaderSeq: strconv.FormatUint(o.seq, 10)}})
	o.mu.Unlock()
	if err != nil {
		// The receivers see the gap in the sequence and count it.
		p.publishErrors.Add(1)
		return
	}
	p.forwarded.Add(1)
}

// owe records that every member must learn that this node's interest in
// topic is now on, and wakes the announcer. p.mu must be held.
func (p *RelayPeers) owe(topic string, on bool) {
	for _, mb := range p.members {
		if mb.full {
			continue // the whole set goes anyway
		}
		if mb.changes == nil {
			mb.changes = map[string]bool{}
		}
		mb.changes[topic] = on
	}
	p.wake()
}

func (p *RelayPeers) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// onMember follows membership: a member that comes up is owed this node's
// whole interest (and asked for its own); one that goes down takes its
// interest with it.
func (p *RelayPeers) onMember(e MemberEvent) {
	id := e.Member.ID
	if id == p.self {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if mb := p.members[id]; mb != nil {
		p.setReadsLocked(mb, nil) // down, or up again: forget what it said
		delete(p.members, id)
	}
	if e.Up {
		p.members[id] = &member{topics: map[string]struct{}{}, acked: map[string]struct{}{}, full: true, hello: true}
		p.wake()
	}
	p.ackedLocked()
}

// onSync takes an announcement from another node and answers it once
// applied: the answer is the sender's subscribe barrier.
func (p *RelayPeers) onSync(m *Msg) {
	src := m.Header[HeaderSource]
	var a announcement
	if err := json.Unmarshal(m.Data, &a); err != nil {
		p.log.Warn("cluster: bad interest announcement", "source", src, "err", err)
		return
	}
	p.mu.Lock()
	// From a node this one does not know as a member yet, nothing is
	// kept: when it comes up here, it is asked for its whole interest.
	if mb := p.members[src]; mb != nil && !p.done {
		if a.Full {
			p.setReadsLocked(mb, a.On)
			mb.heard = true
		} else {
			p.changeReadsLocked(mb, a.On, true)
			p.changeReadsLocked(mb, a.Off, false)
		}
		if a.Hello {
			mb.full, mb.changes, mb.retryAt = true, nil, time.Time{}
			p.wake()
		}
	}
	p.mu.Unlock()
	if err := Respond(p.bus, m, &Msg{Header: Header{HeaderSource: p.self}}); err != nil && !errors.Is(err, ErrClosed) {
		p.log.Debug("cluster: answer an announcement", "source", src, "err", err)
	}
}

// setReadsLocked replaces what mb reads by topics. p.mu must be held.
func (p *RelayPeers) setReadsLocked(mb *member, topics []string) {
	keep := make(map[string]struct{}, len(topics))
	for _, t := range topics {
		keep[t] = struct{}{}
	}
	var gone []string
	for t := range mb.topics {
		if _, ok := keep[t]; !ok {
			gone = append(gone, t)
		}
	}
	p.changeReadsLocked(mb, gone, false)
	p.changeReadsLocked(mb, topics, true)
}

// changeReadsLocked records that mb reads (on) or no longer reads topics,
// and tells the relay when a topic's first remote reader arrives or its
// last leaves. p.mu must be held.
func (p *RelayPeers) changeReadsLocked(mb *member, topics []string, on bool) {
	for _, topic := range topics {
		_, had := mb.topics[topic]
		if had == on {
			continue
		}
		if on {
			mb.topics[topic] = struct{}{}
			if p.remote[topic]++; p.remote[topic] == 1 {
				subject, err := TopicSubject(p.cfg.Prefix, topic)
				if err != nil {
					p.log.Warn("cluster: topic cannot travel between nodes", "err", err)
					continue
				}
				p.out.Store(topic, &outTopic{subject: subject})
				p.relay.SetRemoteInterest(topic, true)
			}
			continue
		}
		delete(mb.topics, topic)
		if p.remote[topic]--; p.remote[topic] == 0 {
			delete(p.remote, topic)
			p.relay.SetRemoteInterest(topic, false)
			p.out.Delete(topic)
		}
	}
}

// announce is the one goroutine that sends announcements, so that each
// member receives them in the order they were decided.
func (p *RelayPeers) announce() {
	defer p.announcer.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-p.kick:
		case <-retry.C:
		case <-p.ctx.Done():
			return
		}
		for {
			id, a, next, ok := p.nextAnnouncement()
			if !next.IsZero() {
				retry.Reset(time.Until(next))
			}
			if !ok {
				break
			}
			err := p.send(id, a)
			if err == nil {
				p.mu.Lock()
				if mb := p.members[id]; mb != nil {
					mb.suspect = false
					if a.Full {
						if !mb.full {
							mb.told = true // and no newer whole set is owed
						}
						clear(mb.acked)
					}
					for _, topic := range a.On {
						mb.acked[topic] = struct{}{}
					}
					for _, topic := range a.Off {
						delete(mb.acked, topic)
					}
					p.ackedLocked()
				}
				p.mu.Unlock()
			}
			if err != nil {
				p.mu.Lock()
				if mb := p.members[id]; mb != nil {
					// What reached it is unknown: send everything again.
					mb.full, mb.hello = true, mb.hello || a.Hello
					mb.changes = nil
					mb.retryAt = time.Now().Add(p.cfg.AnnounceRetry)
					p.ackedLocked() // Barrier no longer waits for it
				}
				p.mu.Unlock()
				p.log.Debug("cluster: interest announcement", "member", id, "err", err)
				retry.Reset(p.cfg.AnnounceRetry)
			}
		}
	}
}

// nextAnnouncement takes what some member is owed now and clears it. next
// is the earliest retry time of members that must wait, if any.
func (p *RelayPeers) nextAnnouncement() (id string, a announcement, next time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return "", a, next, false
	}
	now := time.Now()
	for mid, mb := range p.members {
		if !mb.full && len(mb.changes) == 0 {
			continue
		}
		if now.Before(mb.retryAt) {
			if next.IsZero() || mb.retryAt.Before(next) {
				next = mb.retryAt
			}
			continue
		}
		if mb.full {
			a = announcement{Full: true, Hello: mb.hello, On: make([]string, 0, len(p.local))}
			for topic := range p.local {
				a.On = append(a.On, topic)
			}
		} else {
			for topic, on := range mb.changes {
				if on {
					a.On = append(a.On, topic)
				} else {
					a.Off = append(a.Off, topic)
				}
			}
		}
		mb.full, mb.hello, mb.changes = false, false, nil
		return mid, a, next, true
	}
	return "", a, next, false
}

// send delivers one announcement to member id and waits for its answer.
func (p *RelayPeers) send(id string, a announcement) error {
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.AnnounceTimeout)
	defer cancel()
	_, err = p.bus.Request(ctx, &Msg{Subject: NodeSubject(p.cfg.Prefix, id, SyncService), Header: Header{HeaderSource: p.self}, Data: body})
	return err
}

// Synced reports whether this node and every other member up know what
// the other reads: each answered this node's whole interest, and sent its
// own. A node that is not synced may not yet forward a local message to a
// member's readers, so it should not take clients (the server's /readyz).
func (p *RelayPeers) Synced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, mb := range p.members {
		if !mb.told || !mb.heard {
			return false
		}
	}
	return !p.done
}

// RemoteNodes returns how many other nodes read topic now, as far as this
// node has been told.
func (p *RelayPeers) RemoteNodes(topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.remote[topic]
}

// RelayStats are RelayPeers' counters.
type RelayStats struct {
	Forwarded     uint64 // messages published for other nodes
	PublishErrors uint64 // messages the bus refused to publish
	Received      uint64 // messages received from other nodes
	RemoteTopics  int    // topics another node reads now
	LocalTopics   int    // topics this node subscribes to now
	Members       int    // other nodes up
	// BarrierTimeouts counts new readers whose handshake went out before
	// every member had acknowledged their topic (Barrier gave up).
	BarrierTimeouts uint64
}

// Stats returns a snapshot of the counters.
func (p *RelayPeers) Stats() RelayStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return RelayStats{Forwarded: p.forwarded.Load(), PublishErrors: p.publishErrors.Load(), Received: p.received.Load(), BarrierTimeouts: p.barrierTimeouts.Load(),
		RemoteTopics: len(p.remote), LocalTopics: len(p.local), Members: len(p.members)}
}

// Close stops the watch and the announcer, ends every subscription and
// forgets the other nodes' interest. Close it after the relay has shut
// down; Interest calls after Close do nothing.
func (p *RelayPeers) Close() error {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return nil
	}
	p.done = true
	p.cancel()
	p.mu.Unlock()

	p.stopWatch() // not under p.mu: it waits for onMember
	p.syncSub.Unsubscribe()
	p.announcer.Wait()

	p.mu.Lock()
	defer p.mu.Unlock()
	for _, lt := range p.local {
		if lt.expire != nil {
			lt.expire.Stop()
		}
		lt.end()
	}
	clear(p.local)
	for _, mb := range p.members {
		p.setReadsLocked(mb, nil)
	}
	clear(p.members)
	return nil
}
