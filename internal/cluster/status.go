package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// The status exchange is the scatter-gather behind a cluster-wide /status,
// the stats topic's nodes section and the dashboard's overview: every node
// answers requests on <prefix>.node.<id>.status with its summary, and a
// node that wants everyone's asks each member up in parallel, each with a
// short deadline.
//
// Why one request per member and not one request on a shared
// <prefix>.ctl.status subject: Request returns the first answer only and
// the bus has no wildcard subscriptions, so a shared subject would need an
// inbox that collects several answers, which no Bus offers. Per-member
// requests also say which member did not answer (and why: gone, or too
// slow), cost the same number of messages, and keep a slow node from
// delaying the others' answers.

// StatusService is the node service (NodeSubject) that answers with the
// node's status summary.
const StatusService = "status"

// Defaults for StatusConfig fields left zero.
const (
	// DefaultStatusTimeout bounds the wait for each member's answer.
	DefaultStatusTimeout = 500 * time.Millisecond
	// DefaultRememberLost is how long a member that went down is reported
	// missing (unless it comes back). After that the cluster is taken to
	// have shrunk for good.
	DefaultRememberLost = time.Minute
)

// StatusConfig configures a StatusExchange.
type StatusConfig struct {
	Bus    Bus    // required
	Prefix string // "" means DefaultPrefix
	// Local returns this node's summary, encoded (JSON by convention: it
	// is passed on unchanged). Required. It is called on a goroutine of the
	// bus for each request and by Gather for this node: keep it cheap.
	Local func() ([]byte, error)
	// Timeout bounds the wait for each member's answer (default
	// DefaultStatusTimeout).
	Timeout time.Duration
	// RememberLost is how long a member that went down is listed by Lost
	// (default DefaultRememberLost).
	RememberLost time.Duration
	// OnMembers, if set, is called after each change of membership, on a
	// goroutine of the bus; it must not block.
	OnMembers func()
	Now       func() time.Time // nil means time.Now
}

// NodeAnswer is one member's part of a Gather.
type NodeAnswer struct {
	Member Member
	// Summary is what the member's Local returned; nil if it did not
	// answer, and then Err says why.
	Summary []byte
	Err     error
}

// LostMember is a member that went down and has not come back.
type LostMember struct {
	Member Member
	Since  time.Time // when this node saw it go down
}

// StatusExchange answers status requests for this node and gathers the
// summaries of every member.
type StatusExchange struct {
	cfg       StatusConfig
	sub       Subscription
	stopWatch func()

	mu   sync.Mutex
	lost map[string]LostMember // by member ID
}

// NewStatusExchange subscribes to this node's status subject and starts
// watching the membership. Close it before the bus.
func NewStatusExchange(cfg StatusConfig) (*StatusExchange, error) {
	if cfg.Bus == nil || cfg.Local == nil {
		return nil, errors.New("cluster: status exchange: Bus and Local are required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	switch {
	case cfg.Timeout < 0, cfg.RememberLost < 0:
		return nil, fmt.Errorf("cluster: status exchange: negative timeout %v or remember-lost %v", cfg.Timeout, cfg.RememberLost)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultStatusTimeout
	}
	if cfg.RememberLost == 0 {
		cfg.RememberLost = DefaultRememberLost
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	x := &StatusExchange{cfg: cfg, lost: map[string]LostMember{}}
	sub, err := cfg.Bus.Subscribe(NodeSubject(cfg.Prefix, cfg.Bus.NodeID(), StatusService), x.onRequest)
	if err != nil {
		return nil, fmt.Errorf("cluster: status exchange: %w", err)
	}
	x.sub = sub
	x.stopWatch = cfg.Bus.WatchMembers(x.onMember)
	return x, nil
}

func (x *StatusExchange) onRequest(m *Msg) {
	if m.Reply == "" {
		return
	}
	b, err := x.cfg.Local()
	if err != nil {
		return // the asker times out and reports the member as not answering
	}
	_ = Respond(x.cfg.Bus, m, &Msg{Data: b})
}

func (x *StatusExchange) onMember(e MemberEvent) {
	if e.Member.ID == x.cfg.Bus.NodeID() {
		return
	}
	x.mu.Lock()
	if e.Up {
		delete(x.lost, e.Member.ID)
	} else {
		x.lost[e.Member.ID] = LostMember{Member: e.Member, Since: x.cfg.Now()}
	}
	x.mu.Unlock()
	if x.cfg.OnMembers != nil {
		x.cfg.OnMembers()
	}
}

// Lost returns the members that went down within RememberLost and have not
// come back, ordered by ID. A member that left on purpose (drain) is
// listed too: the bus does not tell a goodbye from a crash.
func (x *StatusExchange) Lost() []LostMember {
	now := x.cfg.Now()
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]LostMember, 0, len(x.lost))
	for id, l := range x.lost {
		if now.Sub(l.Since) >= x.cfg.RememberLost {
			delete(x.lost, id)
			continue
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b LostMember) int { return cmp.Compare(a.Member.ID, b.Member.ID) })
	return out
}

// Gather asks every member up now for its summary, in parallel, each
// within Timeout (and ctx), and returns the answers ordered by member ID.
// This node's own summary is taken directly.
func (x *StatusExchange) Gather(ctx context.Context) []NodeAnswer {
	members := x.cfg.Bus.Members()
	out := make([]NodeAnswer, len(members))
	self := x.cfg.Bus.NodeID()
	var wg sync.WaitGroup
	for i, mb := range members {
		out[i].Member = mb
		if mb.ID == self {
			out[i].Summary, out[i].Err = x.cfg.Local()
			continue
		}
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, x.cfg.Timeout)
			defer cancel()
			reply, err := x.cfg.Bus.Request(rctx, &Msg{Subject: NodeSubject(x.cfg.Prefix, mb.ID, StatusService)})
			if err != nil {
				out[i].Err = err
				return
			}
			out[i].Summary = reply.Data
		})
	}
	wg.Wait()
	return out
}

// Close stops answering and watching. It may be called more than once.
func (x *StatusExchange) Close() {
	x.mu.Lock()
	stop := x.stopWatch
	x.stopWatch = nil
	x.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	x.sub.Unsubscribe()
}
