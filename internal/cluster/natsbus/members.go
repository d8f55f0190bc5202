package natsbus

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-hub/switchboard/internal/cluster"
)

// Membership by heartbeats.
//
// Each node publishes a heartbeat on <prefix>.node.<id>.hb every
// HeartbeatInterval, and subscribes to every node's (the wildcard
// <prefix>.node.*.hb, on the connection directly: Bus subjects have no
// wildcards). The body is JSON:
//
//	{"started_ns": <the node's start, Unix nanoseconds>, "leaving": <bool>}
//
// A node is up from its first heartbeat; when a node hears a member it did
// not know, it answers with a heartbeat of its own at once, so a newcomer
// learns the others without waiting an interval. A member is down when it
// says goodbye ("leaving", sent by Close), or when MemberTimeout passes
// without a heartbeat from it (it was killed, or the network between is
// down); the check runs every half HeartbeatInterval, so a killed node is
// down within MemberTimeout + HeartbeatInterval/2 (2.25 s by default). A
// heartbeat with another start time is a node that restarted: down, then
// up again. The same connection carries heartbeats and data, so a node
// whose heartbeats arrive can be reached.

// heartbeat is the body of a heartbeat message.
type heartbeat struct {
	StartedNS int64 `json:"started_ns"`
	Leaving   bool  `json:"leaving,omitempty"`
}

// heartbeatSubject returns node's heartbeat subject.
func heartbeatSubject(prefix, node string) string { return cluster.NodeSubject(prefix, node, "hb") }

// peer is another member, as heard.
type peer struct {
	member   cluster.Member
	lastSeen time.Time // guarded by Bus.mu
}

// startMembership subscribes to heartbeats, announces this node and
// starts the heartbeat loop.
func (b *Bus) startMembership() error {
	wildcard := heartbeatSubject(b.opts.Prefix, "*")
	sub, err := b.nc.Subscribe(wildcard, b.onHeartbeat)
	if err != nil {
		return fmt.Errorf("natsbus: subscribe to heartbeats: %w", err)
	}
	b.mu.Lock()
	b.hbSub = sub
	b.running.Add(1)
	b.mu.Unlock()
	go b.heartbeatLoop()
	b.publishHeartbeat(false)
	return nil
}

// publishHeartbeat announces this node, or its leaving. A heartbeat that
// cannot be sent now (disconnected) is not retried: the next one follows.
func (b *Bus) publishHeartbeat(leaving bool) {
	body, _ := json.Marshal(heartbeat{StartedNS: b.self.Started.UnixNano(), Leaving: leaving})
	b.nc.Publish(b.hbSubject, body)
}

// heartbeatLoop sends this node's heartbeats and expires silent members,
// until Close.
func (b *Bus) heartbeatLoop() {
	defer b.running.Done()
	// Ticks at half the interval: a heartbeat every other tick, the
	// expiry check at each.
	tick := time.NewTicker(b.opts.HeartbeatInterval / 2)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-b.stopHB:
			return
		case now := <-tick.C:
			if n%2 == 1 {
				b.publishHeartbeat(false)
			}
			b.expire(now)
		}
	}
}

// expire takes down the members not heard from for MemberTimeout.
func (b *Bus) expire(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed {
		return
	}
	for _, id := range slices.Sorted(maps.Keys(b.members)) {
		if p := b.members[id]; now.Sub(p.lastSeen) > b.opts.MemberTimeout {
			b.downLocked(p)
		}
	}
}

// onHeartbeat handles a heartbeat from another node (the connection is
// NoEcho: never this node's own).
func (b *Bus) onHeartbeat(m *nats.Msg) {
	id, ok := strings.CutPrefix(m.Subject, b.opts.Prefix+".node.")
	if ok {
		id, ok = strings.CutSuffix(id, ".hb")
	}
	var hb heartbeat
	if !ok || strings.Contains(id, ".") || id == b.self.ID || json.Unmarshal(m.Data, &hb) != nil || hb.StartedNS == 0 {
		// Not a heartbeat of a peer, or one with this node's id: a
		// misconfigured node, which must not replace this one.
		return
	}
	started := time.Unix(0, hb.StartedNS)
	now := time.Now()
	b.mu.Lock()
	if b.isClosed {
		b.mu.Unlock()
		return
	}
	p := b.members[id]
	if p != nil && !p.member.Started.Equal(started) {
		if started.Before(p.member.Started) {
			// A late heartbeat of the node's previous life.
			b.mu.Unlock()
			return
		}
		b.downLocked(p) // it restarted
		p = nil
	}
	switch {
	case hb.Leaving:
		if p != nil {
			b.downLocked(p)
		}
	case p == nil:
		p = &peer{member: cluster.Member{ID: id, Started: started}, lastSeen: now}
		b.members[id] = p
		b.announceLocked(cluster.MemberEvent{Member: p.member, Up: true})
		// The answer is sent under b.mu, so that it cannot follow the
		// goodbye of a Close that began meanwhile (Close sets isClosed
		// under b.mu before it says goodbye).
		b.publishHeartbeat(false)
	default:
		p.lastSeen = now
	}
	b.mu.Unlock()
}

// downLocked removes p and reports it down. b.mu must be held.
func (b *Bus) downLocked(p *peer) {
	delete(b.members, p.member.ID)
	b.announceLocked(cluster.MemberEvent{Member: p.member, Up: false})
}

// announceLocked queues ev for every watcher. b.mu must be held, so that
// every watcher sees the changes in the same order.
func (b *Bus) announceLocked(ev cluster.MemberEvent) {
	for w := range b.watchers {
		w.push(ev)
	}
}

// membersLocked returns the members up now, this node included, by id.
func (b *Bus) membersLocked() []cluster.Member {
	out := make([]cluster.Member, 0, len(b.members)+1)
	out = append(out, b.self)
	for _, p := range b.members {
		out = append(out, p.member)
	}
	slices.SortFunc(out, func(x, y cluster.Member) int { return cmp.Compare(x.ID, y.ID) })
	return out
}

// Members returns the nodes up now, this one included, ordered by ID.
func (b *Bus) Members() []cluster.Member {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.membersLocked()
}

// WatchMembers reports the members up now, then each change.
func (b *Bus) WatchMembers(fn func(cluster.MemberEvent)) (stop func()) {
	w := &watcher{fn: fn, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	b.mu.Lock()
	if b.isClosed {
		b.mu.Unlock()
		return func() {}
	}
	for _, m := range b.membersLocked() {
		w.push(cluster.MemberEvent{Member: m, Up: true})
	}
	b.watchers[w] = struct{}{}
	b.mu.Unlock()
	go w.run()
	return func() {
		b.mu.Lock()
		if b.watchers != nil {
			delete(b.watchers, w)
		}
		b.mu.Unlock()
		w.stop()
	}
}

// watcher passes membership events to one watch function, in order, on its
// own goroutine. Its queue holds one event per membership change, which
// members make rarely.
type watcher struct {
	fn       func(cluster.MemberEvent)
	wake     chan struct{} // a token when events were queued
	done     chan struct{} // closed by stop
	exited   chan struct{} // closed when run returns
	stopOnce sync.Once

	mu sync.Mutex
	q  []cluster.MemberEvent // guarded by mu
}

func (w *watcher) push(ev cluster.MemberEvent) {
	w.mu.Lock()
	w.q = append(w.q, ev)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) run() {
	defer close(w.exited)
	for {
		select {
		case <-w.done:
			return
		case <-w.wake:
		}
		for {
			select {
			case <-w.done:
				return
			default:
			}
			w.mu.Lock()
			if len(w.q) == 0 {
				w.mu.Unlock()
				break
			}
			ev := w.q[0]
			w.q = w.q[1:]
			w.mu.Unlock()
			w.fn(ev)
		}
	}
}

// stop ends the watch and waits for a call of fn in progress.
func (w *watcher) stop() {
	w.stopOnce.Do(func() { close(w.done) })
	<-w.exited
}
