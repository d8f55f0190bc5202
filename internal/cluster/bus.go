// Package cluster is what nodes share: the Bus (publish/subscribe on
// subjects, request/reply, membership) and the adapters that carry one
// part of the node over it. Today: RelayPeers, the relay's Peers over the
// bus (interest and relayed messages), and CodeRouter, which makes a
// one-time code usable on any node. A node on its own runs the same
// paths over the in-memory bus (cluster/membus); a cluster will run them
// over NATS.
//
// Bus guarantees, which every implementation passes (cluster/bustest):
//   - Subjects are exact: dot-separated tokens of printable ASCII without
//     spaces or the wildcards "*" and ">"; no wildcard subscriptions.
//   - No echo: a node never receives its own publications or requests.
//   - Order: the messages one node publishes on a subject reach each
//     subscription in the order they were published.
//   - Publish never waits for subscribers. Each subscription has a bounded
//     queue; what does not fit is dropped and counted (Subscription.Dropped).
//   - A subscription's handler is called for one message at a time, on a
//     goroutine of the bus; a slow handler delays its own subscription only.
//   - Request waits for the first answer, until its context is done; with no
//     subscriber it fails at once with ErrNoResponders.
//   - Members lists the nodes up now, this one included; WatchMembers reports
//     each change, in order.
//
// Subjects (DESIGN.md §6; Prefix is configurable, "sb" by default):
//
//	<prefix>.t.<encoded topic>   relayed messages of a topic (TopicSubject);
//	                             headers Sb-Source, Sb-Kind, Sb-Seq
//	<prefix>.node.<id>.sync      interest announcements to node id; the answer
//	                             is the subscribe barrier
//	<prefix>.node.<id>.codes     node id's one-time codes (CodeRouter), by
//	                             header Sb-Op: take one (the code; the answer
//	                             is the grant, or not found), or issue one for
//	                             a grant (a topic's home node issues its codes)
//	<prefix>.node.<id>.status    node id's status summary (StatusExchange;
//	                             internal/control's NodeSummary, JSON)
//	<prefix>.ctl.revocations     a recorded revoke or unrevoke, to every node
//	                             (internal/control's RevocationEvent, JSON:
//	                             op, kind, value, expires_at, revision,
//	                             node, seq)
//	<prefix>.job.changed         a job's phase changed, it was deleted, or its
//	                             timers moved, to every node (internal/jobs'
//	                             Event, JSON: job, change, phase, revision,
//	                             node); it only wakes: the store is the truth
//	<prefix>.agents              the agents whose control channels a node holds:
//	                             one agent's state or end, numbered per node
//	                             (internal/jobs/agentlink, JSON: node, seq,
//	                             agents, gone)
//	<prefix>.node.<id>.agents    the list of node id's agents (same JSON)
//	<prefix>.agent.<id>.ctl      a run or an abort for agent id (jobproto JSON),
//	                             taken by the node holding its channel
//
// This package imports the standard library, internal/relay and
// internal/access (for the grant a code stands for) only.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Msg is one message on the bus. Once published it is shared by every
// receiver and must not be modified by anyone.
type Msg struct {
	Subject string
	// Reply is where an answer goes: set by Request; answer with Respond.
	Reply  string
	Header Header // may be nil
	Data   []byte
}

// Header is a message's metadata: short printable ASCII keys and values.
type Header map[string]string

// Handler handles a message delivered to a subscription.
type Handler func(m *Msg)

// Subscription is a handler's interest in one subject.
type Subscription interface {
	// Unsubscribe stops further deliveries; a handler call already running
	// may finish. It may be called more than once.
	Unsubscribe() error
	// Dropped returns how many messages were dropped because this
	// subscription's queue was full.
	Dropped() uint64
}

// Member is a node of the cluster.
type Member struct {
	ID      string
	Started time.Time // when it joined; a node that rejoins has a new one
}

// MemberEvent reports that a member came up or went down.
type MemberEvent struct {
	Member Member
	Up     bool
}

// Bus connects this node to the others. See the package doc for the
// guarantees every implementation gives.
type Bus interface {
	// NodeID returns this node's id on the bus.
	NodeID() string
	// Publish sends m to every other node's subscriptions of m.Subject.
	Publish(m *Msg) error
	// Subscribe calls h with each message published on subject by another
	// node, until Unsubscribe or Close.
	Subscribe(subject string, h Handler) (Subscription, error)
	// Request publishes m with a Reply subject of its own and returns the
	// first answer, or ErrNoResponders, or ctx's error.
	Request(ctx context.Context, m *Msg) (*Msg, error)
	// Members returns the nodes up now, this one included, ordered by ID.
	Members() []Member
	// WatchMembers calls fn with an Up event for each member up now, then
	// with each change, one call at a time, on a goroutine of the bus. fn
	// must not block for long. stop ends the watch and waits for a call in
	// progress; it must not be called from fn.
	WatchMembers(fn func(MemberEvent)) (stop func())
	// Close leaves the cluster: subscriptions and watches end, pending
	// requests fail with ErrClosed, and Close returns once no handler of
	// this node's runs. Later calls fail with ErrClosed. Close must not be
	// called from a handler.
	Close() error
}

// Errors of every Bus implementation.
var (
	ErrClosed         = errors.New("cluster: bus closed")
	ErrNoResponders   = errors.New("cluster: no responders")
	ErrInvalidSubject = errors.New("cluster: invalid subject")
)

// Respond answers the request req with m, over b.
func Respond(b Bus, req *Msg, m *Msg) error {
	if req.Reply == "" {
		return errors.New("cluster: respond: the message is not a request")
	}
	m.Subject = req.Reply
	return b.Publish(m)
}

// ValidSubject reports whether s is a subject every bus accepts: one or more
// non-empty dot-separated tokens of printable ASCII other than space, "*"
// and ">", at most MaxSubjectLength bytes.
func ValidSubject(s string) error {
	if s == "" || len(s) > MaxSubjectLength {
		return fmt.Errorf("%w: length %d, want 1 to %d", ErrInvalidSubject, len(s), MaxSubjectLength)
	}
	tokenStart := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if i == tokenStart {
				return fmt.Errorf("%w: empty token in %q", ErrInvalidSubject, s)
			}
			tokenStart = i + 1
		case c <= ' ' || c >= 0x7f || c == '*' || c == '>':
			return fmt.Errorf("%w: character %q in %q", ErrInvalidSubject, c, s)
		}
	}
	if tokenStart == len(s) {
		return fmt.Errorf("%w: empty last token in %q", ErrInvalidSubject, s)
	}
	return nil
}

// MaxSubjectLength bounds a subject. A topic's subject is at most three
// times the topic (255 bytes, each byte escaped) plus the prefix.
const MaxSubjectLength = 1024
