package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Revocations are recorded once and enforced everywhere (DESIGN.md §2, §6).
// The Handler records a change (store and audit, in one transaction); then
// its node's Enforcer publishes the change as a RevocationEvent on the bus,
// for every other node, and applies it here. Every node's Enforcer applies
// the events it receives with the same function (Enforcer.apply), so a
// single node's tests exercise the path a remote event takes.
//
// Catch-up (DESIGN.md §6): every change carries the store's revision
// (store.RevocationLog). Each node knows the revision up to which it has
// applied every change, and polls the shared store (Enforcer.Run, every
// EnforcerConfig.PollEvery, and at once when an event's revision skips one)
// for the changes after it: a change whose event was lost takes effect
// within one poll period. Changes apply in revision order per (kind, value):
// an event or a logged change older than what this node applied for its
// value is ignored, so a revoke and an allow of one booking recorded on two
// nodes at once end the same way on every node. While the store is
// unreachable, the node enforces what it knows and the poll retries.

// RevocationsSubject returns the bus subject on which revocation changes
// are published: <prefix>.ctl.revocations (the subject list is in package
// cluster's doc).
func RevocationsSubject(prefix string) string { return prefix + ".ctl.revocations" }

// The operations of a RevocationEvent.
const (
	OpRevoke   = "revoke"
	OpUnrevoke = "unrevoke"
)

// RevocationEvent is one recorded revocation change, as it travels on the
// bus (JSON). Unknown fields are ignored, so a newer node may add some.
type RevocationEvent struct {
	// Op is OpRevoke or OpUnrevoke.
	Op    string               `json:"op"`
	Kind  store.RevocationKind `json:"kind"`
	Value string               `json:"value"`
	// Reason, Actor and CreatedAt describe the change, for the lists every
	// node serves from memory.
	Reason    string    `json:"reason,omitempty"`
	Actor     string    `json:"actor,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when a revocation may be forgotten, or, for an unrevoke
	// with Allow, when the allowance may be.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Allow, on an unrevoke of a booking, records it as allowed again
	// (practable's /bids/allow) until ExpiresAt.
	Allow bool `json:"allow,omitempty"`
	// Revision is the store's revision of the change (store.RevocationLog):
	// changes take effect in revision order, and a receiver that sees one
	// skip catches up from the store. 0: a change without a revision,
	// applied as it comes.
	Revision int64 `json:"revision,omitempty"`
	// Node and Seq identify the event: the node that recorded it and the
	// count of events that node's Enforcer has published since it started
	// (1, 2, …). A receiver that sees a node's Seq skip counts the events
	// it missed (EnforcerStats.Missed).
	Node string `json:"node"`
	Seq  uint64 `json:"seq"`
}

// match is what the event covers, and whether the event is one this node
// can apply.
func (ev *RevocationEvent) check() (relay.IdentityMatch, error) {
	if ev.Op != OpRevoke && ev.Op != OpUnrevoke {
		return relay.IdentityMatch{}, fmt.Errorf("unknown op %q", truncateForLog(ev.Op))
	}
	m, ok := identityMatch(ev.Kind, ev.Value)
	if !ok {
		return m, fmt.Errorf("unknown kind %q", truncateForLog(string(ev.Kind)))
	}
	switch {
	case len(ev.Value) > maxRevocationValueLen:
		return m, fmt.Errorf("value longer than %d bytes", maxRevocationValueLen)
	case ev.Op == OpRevoke && ev.ExpiresAt.IsZero():
		return m, errors.New("a revocation without expires_at")
	case ev.Allow && (ev.Op != OpUnrevoke || ev.Kind != store.RevokeBooking || ev.ExpiresAt.IsZero()):
		return m, errors.New("allow is for the unrevoke of a booking, with expires_at")
	}
	return m, nil
}

// identityMatch is the one matcher of a revocation (kind, value): the
// relay's, the endpoints' and the pending codes' alike. ok is false for an
// unknown kind or an empty value.
func identityMatch(kind store.RevocationKind, value string) (m relay.IdentityMatch, ok bool) {
	switch kind {
	case store.RevokeBooking:
		m = relay.IdentityMatch{Kind: relay.IdentityBooking, Value: value}
	case store.RevokeSubject:
		m = relay.IdentityMatch{Kind: relay.IdentitySubject, Value: value}
	case store.RevokeToken:
		m = relay.IdentityMatch{Kind: relay.IdentityToken, Value: value}
	}
	return m, m.Valid()
}

// ConnCloser closes the connections (or sessions) it holds whose identity
// m matches, with code and reason, and reports how many: an endpoint that
// keeps connections outside the relay (shell sessions waiting for their
// host, agent control channels, dashboard sessions). It must check
// admissions against the Revocations under the lock it takes here, so a
// connection admitted concurrently with a revocation is refused or closed.
type ConnCloser interface {
	CloseWhere(m relay.IdentityMatch, code relay.CloseCode, reason string) int
}

// CodeDeleter deletes pending one-time codes (access.MemoryCodeStore).
type CodeDeleter interface {
	DeleteWhere(m relay.IdentityMatch) int
}

// EnforcerConfig configures an Enforcer.
type EnforcerConfig struct {
	Revocations *Revocations  // required: the in-memory set every admission consults
	Relay       *relay.Server // required
	Codes       CodeDeleter   // may be nil
	// Closers are the endpoints with connections of their own; may be
	// empty.
	Closers []ConnCloser
	// Bus, if set, carries events to and from the other nodes; without it
	// the Enforcer applies its own node's changes only.
	Bus cluster.Bus
	// Prefix is the first token of the subject; default
	// cluster.DefaultPrefix.
	Prefix string
	// Log, if set, is the store's change log (the store the cluster's
	// nodes share): Run catches up from it. Without it only events apply.
	Log store.RevocationLog
	// Revision is the revision Revocations was loaded at (LoadRevocations):
	// the changes after it are caught up.
	Revision int64
	// PollEvery is how often Run asks Log for changes (default
	// DefaultRevocationPoll).
	PollEvery time.Duration
	Logger    *slog.Logger
}

// DefaultRevocationPoll is how often a node asks the store for revocation
// changes it has not applied (serve --revocation-poll): the bound on how
// long a lost bus event delays a change on a node.
const DefaultRevocationPoll = time.Second

// catchUpTimeout bounds one poll of the store, and catchUpFailureLogEvery
// how often a store that keeps failing is logged.
const (
	catchUpTimeout         = 10 * time.Second
	catchUpFailureLogEvery = time.Minute
)

// Enforcer applies revocation changes on this node: the in-memory set
// first, then it closes the matching relay connections and endpoint
// connections with 4003 and deletes the matching pending codes. The set
// changes before anything is closed: an endpoint that admits under its
// CloseWhere lock either sees the revocation or is found by CloseWhere.
//
// Locking: applyMu serialises applications, local, remote and caught up,
// so each one's set change and closes happen before the next's; it is taken
// after the Handler's changeMu and before the locks of the set, the relay
// and the closers. busMu guards the publishing sequence; Publish does not
// block. The store is read (CatchUp) without applyMu held.
type Enforcer struct {
	cfg     EnforcerConfig
	subject string
	sub     cluster.Subscription // nil without a bus
	// gap asks Run to catch up at once (an event skipped a revision).
	gap chan struct{}

	busMu sync.Mutex
	seq   uint64 // guarded by busMu: the last Seq published

	applyMu sync.Mutex
	lastSeq map[string]uint64 // guarded by applyMu: by source node, the last Seq applied
	// revision: every change up to it has been applied here (or was
	// superseded by a later change of its value). Guarded by applyMu.
	revision atomic.Int64
	// ahead holds, by (kind, value), the revision of a change applied
	// beyond revision (an event that arrived before an earlier one);
	// entries at or below revision are dropped. Guarded by applyMu.
	ahead map[revocationKey]int64

	applied, published, publishFailed, missed atomic.Uint64
	ignoredBadJSON, ignoredInvalid            atomic.Uint64
	stale, caughtUp, pollFailures             atomic.Uint64
}

// revocationKey is what a change is about.
type revocationKey struct {
	kind  store.RevocationKind
	value string
}

// NewEnforcer returns an Enforcer for cfg, subscribed to the other nodes'
// events if cfg.Bus is set. Close unsubscribes.
func NewEnforcer(cfg EnforcerConfig) (*Enforcer, error) {
	if cfg.Revocations == nil || cfg.Relay == nil {
		return nil, errors.New("control: enforcer: Revocations and Relay are required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = cluster.DefaultPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollEvery < 0 {
		return nil, fmt.Errorf("control: enforcer: revocation poll %v (--revocation-poll): must be positive; 0 means %v", cfg.PollEvery, DefaultRevocationPoll)
	}
	if cfg.PollEvery == 0 {
		cfg.PollEvery = DefaultRevocationPoll
	}
	e := &Enforcer{cfg: cfg, subject: RevocationsSubject(cfg.Prefix), lastSeq: map[string]uint64{},
		gap: make(chan struct{}, 1), ahead: map[revocationKey]int64{}}
	e.revision.Store(cfg.Revision)
	if err := cluster.ValidSubject(e.subject); err != nil {
		return nil, fmt.Errorf("control: enforcer: prefix %q: %w", cfg.Prefix, err)
	}
	if cfg.Bus != nil {
		sub, err := cfg.Bus.Subscribe(e.subject, e.receive)
		if err != nil {
			return nil, fmt.Errorf("control: enforcer: subscribe: %w", err)
		}
		e.sub = sub
	}
	return e, nil
}

// Close stops receiving other nodes' events. It may be called more than
// once.
func (e *Enforcer) Close() {
	if e.sub != nil {
		_ = e.sub.Unsubscribe()
	}
}

// Enforce makes a change the store has recorded take effect everywhere: it
// publishes ev (stamped with this node's id and next Seq) to the other
// nodes, then applies it here, and returns how many connections and
// sessions it closed here (0 if a catch-up applied it first, or a later
// change of its value already took effect). A failed publish is logged and
// counted; the change still takes effect here, and on the other nodes at
// their next catch-up.
func (e *Enforcer) Enforce(ev RevocationEvent) int {
	if e.cfg.Bus != nil {
		e.busMu.Lock()
		e.seq++
		ev.Node, ev.Seq = e.cfg.Bus.NodeID(), e.seq
		body, err := json.Marshal(ev)
		if err == nil {
			err = e.cfg.Bus.Publish(&cluster.Msg{Subject: e.subject, Data: body})
		}
		e.busMu.Unlock()
		if err != nil {
			e.publishFailed.Add(1)
			e.cfg.Logger.Warn("control: publishing a revocation to the other nodes failed", "kind", ev.Kind, "op", ev.Op, "err", err)
		} else {
			e.published.Add(1)
		}
	}
	closed, err := e.apply(&ev)
	if err != nil { // the Handler records only what check accepts
		e.ignoredInvalid.Add(1)
		e.cfg.Logger.Error("control: a recorded revocation cannot be applied", "kind", ev.Kind, "op", ev.Op, "err", err)
	}
	return closed
}

// receive applies an event published by another node. One that does not
// decode or check is counted and logged, and changes nothing.
func (e *Enforcer) receive(m *cluster.Msg) {
	var ev RevocationEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		e.ignoredBadJSON.Add(1)
		e.cfg.Logger.Warn("control: ignored a revocation event that is not valid JSON", "bytes", len(m.Data), "err", err)
		return
	}
	if _, err := e.apply(&ev); err != nil {
		e.ignoredInvalid.Add(1)
		e.cfg.Logger.Warn("control: ignored a revocation event", "node", truncateForLog(ev.Node), "seq", ev.Seq, "err", err)
	}
}

// apply is the enforcement of one change, for this node's changes and
// every other node's alike. A change older than what was applied for its
// value is ignored (counted stale); one that skips a revision is applied and
// has Run catch up.
func (e *Enforcer) apply(ev *RevocationEvent) (closed int, err error) {
	m, err := ev.check()
	if err != nil {
		return 0, err
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.noteSeqLocked(ev)
	if ev.Revision > 0 {
		if e.staleLocked(ev) {
			e.stale.Add(1)
			return 0, nil
		}
		if r := e.revision.Load(); ev.Revision == r+1 {
			e.revision.Store(ev.Revision)
		} else {
			e.ahead[revocationKey{ev.Kind, ev.Value}] = ev.Revision
			select {
			case e.gap <- struct{}{}:
			default:
			}
		}
	}
	return e.effectLocked(ev, m), nil
}

// staleLocked reports whether ev's change is already applied or superseded
// here: its revision is not after the revision every change up to which is
// applied, nor after a later change of the same value applied ahead.
func (e *Enforcer) staleLocked(ev *RevocationEvent) bool {
	return ev.Revision <= e.revision.Load() || ev.Revision <= e.ahead[revocationKey{ev.Kind, ev.Value}]
}

// effectLocked makes a checked change take effect here.
func (e *Enforcer) effectLocked(ev *RevocationEvent, m relay.IdentityMatch) (closed int) {
	e.applied.Add(1)
	if ev.Op == OpUnrevoke {
		var allow *store.Allowance
		if ev.Allow {
			allow = &store.Allowance{BookingID: ev.Value, Actor: ev.Actor, CreatedAt: ev.CreatedAt, ExpiresAt: ev.ExpiresAt}
		}
		e.cfg.Revocations.Remove(ev.Kind, ev.Value, allow)
		return 0
	}
	// The set first: see the type's doc.
	e.cfg.Revocations.Add(store.Revocation{Kind: ev.Kind, Value: ev.Value, Reason: ev.Reason, Actor: ev.Actor,
		CreatedAt: ev.CreatedAt, ExpiresAt: ev.ExpiresAt})
	reason := string(ev.Kind) + " revoked"
	closed = e.cfg.Relay.CloseWhere(func(i *relay.Info) bool { return m.Matches(i.Identity) }, relay.CloseDenied, relay.ReasonDenied, reason)
	for _, c := range e.cfg.Closers {
		closed += c.CloseWhere(m, relay.CloseDenied, reason)
	}
	if e.cfg.Codes != nil {
		e.cfg.Codes.DeleteWhere(m)
	}
	return closed
}

// Run catches up from the store until ctx is done: every PollEvery, and at
// once after an event that skipped a revision. A poll that fails (the
// store unreachable) changes nothing, is counted and logged (the first
// failure, then at most once per catchUpFailureLogEvery) and is retried at
// the next tick. Without a Log, Run returns at once.
func (e *Enforcer) Run(ctx context.Context) {
	if e.cfg.Log == nil {
		return
	}
	t := time.NewTicker(e.cfg.PollEvery)
	defer t.Stop()
	var (
		failing    int // polls failed since the last success
		lastLogged time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.gap:
		}
		pctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
		err := e.CatchUp(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			e.pollFailures.Add(1)
			failing++
			if now := time.Now(); failing == 1 || now.Sub(lastLogged) >= catchUpFailureLogEvery {
				lastLogged = now
				e.cfg.Logger.Warn("control: cannot read revocation changes from the store; enforcing those known, retrying",
					"failed_polls", failing, "revision", e.revision.Load(), "err", err)
			}
		case failing > 0:
			e.cfg.Logger.Info("control: reading revocation changes from the store again", "failed_polls", failing, "revision", e.revision.Load())
			failing = 0
		}
	}
}

// CatchUp applies the changes recorded after this node's revision that it
// has not applied (their events lost or late), in revision order, and
// advances the revision to the store's. It costs one small read when there
// is nothing new. Run calls it; it may be called at any time.
func (e *Enforcer) CatchUp(ctx context.Context) error {
	if e.cfg.Log == nil {
		return nil
	}
	current, err := e.cfg.Log.RevocationRevision(ctx)
	if err != nil {
		return err
	}
	// Bounded: each page moves the revision forward by at least one change.
	for range 1 + current/int64(store.DefaultRevocationChanges) + 1 {
		after := e.revision.Load()
		if after >= current {
			return nil
		}
		page, err := e.cfg.Log.RevocationChanges(ctx, after, store.DefaultRevocationChanges)
		if err != nil {
			return err
		}
		e.applyLogged(page)
		if !page.More {
			return nil
		}
	}
	return nil
}

// applyLogged applies a page of the change log and moves the revision to
// the page's.
func (e *Enforcer) applyLogged(page store.RevocationChanges) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	for i := range page.Changes {
		ev := eventFromChange(&page.Changes[i])
		if e.staleLocked(&ev) {
			continue
		}
		m, err := ev.check()
		if err != nil {
			e.ignoredInvalid.Add(1)
			e.cfg.Logger.Error("control: a recorded revocation change cannot be applied", "revision", ev.Revision, "kind", ev.Kind, "op", ev.Op, "err", err)
			continue
		}
		e.caughtUp.Add(1)
		closed := e.effectLocked(&ev, m)
		e.cfg.Logger.Info("control: applied a revocation change missed on the bus", "revision", ev.Revision, "kind", ev.Kind, "op", ev.Op, "closed", closed)
	}
	if page.Revision > e.revision.Load() {
		e.revision.Store(page.Revision)
	}
	r := e.revision.Load()
	for k, ahead := range e.ahead {
		if ahead <= r {
			delete(e.ahead, k)
		}
	}
}

// eventFromChange is the event of a logged change.
func eventFromChange(c *store.RevocationChange) RevocationEvent {
	ev := RevocationEvent{Op: OpRevoke, Kind: c.Revocation.Kind, Value: c.Revocation.Value, Reason: c.Revocation.Reason,
		Actor: c.Revocation.Actor, CreatedAt: c.Revocation.CreatedAt, ExpiresAt: c.Revocation.ExpiresAt, Revision: c.Revision}
	if c.Op == store.OpUnrevoke {
		ev.Op, ev.Reason, ev.ExpiresAt = OpUnrevoke, "", time.Time{}
		if c.Allow != nil {
			ev.Allow, ev.Actor, ev.CreatedAt, ev.ExpiresAt = true, c.Allow.Actor, c.Allow.CreatedAt, c.Allow.ExpiresAt
		}
	}
	return ev
}

// Revision returns the revision up to which this node has applied every
// revocation change.
func (e *Enforcer) Revision() int64 { return e.revision.Load() }

// noteSeqLocked counts the events of ev's node this node missed. A Seq
// that does not grow is a node that restarted (its count starts again).
func (e *Enforcer) noteSeqLocked(ev *RevocationEvent) {
	if ev.Node == "" {
		return
	}
	last, seen := e.lastSeq[ev.Node]
	if seen && ev.Seq > last+1 {
		e.missed.Add(ev.Seq - last - 1)
		e.cfg.Logger.Warn("control: missed revocation events from a node", "node", truncateForLog(ev.Node), "missed", ev.Seq-last-1)
	}
	e.lastSeq[ev.Node] = ev.Seq
}

// EnforcerStats are an Enforcer's counters since it started.
type EnforcerStats struct {
	Applied       uint64 // changes applied here, this node's and others'
	Published     uint64 // this node's changes sent to the other nodes
	PublishFailed uint64 // this node's changes the bus refused
	Missed        uint64 // other nodes' events that never arrived (Seq gaps)
	// Ignored counts received events that changed nothing, by reason:
	// "bad_json" (does not decode) and "invalid" (unknown op or kind,
	// empty or oversized value, missing expiry).
	Ignored map[string]uint64
	// Stale counts events of changes already applied or superseded here
	// (by catch-up, or by a later change of the same value).
	Stale uint64
	// CaughtUp counts changes applied from the store's log, not from an
	// event: their events were lost or late.
	CaughtUp uint64
	// PollFailures counts polls of the store that failed.
	PollFailures uint64
	// Revision is the revision up to which every change is applied here.
	Revision int64
}

// Stats returns the counters.
func (e *Enforcer) Stats() EnforcerStats {
	return EnforcerStats{Applied: e.applied.Load(), Published: e.published.Load(), PublishFailed: e.publishFailed.Load(),
		Missed: e.missed.Load(), Ignored: map[string]uint64{"bad_json": e.ignoredBadJSON.Load(), "invalid": e.ignoredInvalid.Load()},
		Stale: e.stale.Load(), CaughtUp: e.caughtUp.Load(), PollFailures: e.pollFailures.Load(), Revision: e.revision.Load()}
}

// truncateForLog bounds a string taken from the bus before it is logged.
func truncateForLog(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
