package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"switchboard/internal/access"
	"switchboard/internal/relay"
)

// CodeRouter makes a one-time code usable on any node: codes stay in the
// memory of the node that issued them (the node named in the code), and a
// node that is handed a foreign code takes it from its owner with one
// request on <prefix>.node.<owner>.codes. The owner's store takes it
// atomically, so of concurrent uses on several nodes at most one succeeds.
// An owner that is gone answers at once (no responders): the client is
// refused without waiting and asks for a new code.
//
// It is access.RemoteCodes on the asking side, and answers the other nodes'
// requests from the local store.
type CodeRouter struct {
	bus    Bus
	prefix string
	local  access.CodeStore
	log    *slog.Logger
	sub    Subscription
}

// CodeRouterConfig configures a CodeRouter.
type CodeRouterConfig struct {
	Bus Bus // required
	// Codes is this node's store, from which other nodes take its codes.
	// Required.
	Codes access.CodeStore
	// Prefix is the first token of every subject; default DefaultPrefix.
	Prefix string
	Logger *slog.Logger // nil discards
}

// NewCodeRouter answers the other nodes' takes of this node's codes until
// Close.
func NewCodeRouter(cfg CodeRouterConfig) (*CodeRouter, error) {
	if cfg.Bus == nil || cfg.Codes == nil {
		return nil, errors.New("cluster: code router: Bus and Codes are required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &CodeRouter{bus: cfg.Bus, prefix: cfg.Prefix, local: cfg.Codes, log: cfg.Logger}
	sub, err := cfg.Bus.Subscribe(NodeSubject(cfg.Prefix, cfg.Bus.NodeID(), codesService), r.answer)
	if err != nil {
		return nil, fmt.Errorf("cluster: code router: %w", err)
	}
	r.sub = sub
	return r, nil
}

// codesService is the node service that takes codes (NodeSubject).
const codesService = "codes"

// Take takes code from node (access.RemoteCodes).
func (r *CodeRouter) Take(ctx context.Context, node, code string) (access.Grant, time.Time, bool, error) {
	subject := NodeSubject(r.prefix, node, codesService)
	if err := ValidSubject(subject); err != nil {
		return access.Grant{}, time.Time{}, false, err
	}
	reply, err := r.bus.Request(ctx, &Msg{Subject: subject, Data: []byte(code)})
	switch {
	case errors.Is(err, ErrNoResponders):
		return access.Grant{}, time.Time{}, false, access.ErrCodeNodeGone
	case err != nil:
		return access.Grant{}, time.Time{}, false, err
	}
	var taken takenCode
	if err := json.Unmarshal(reply.Data, &taken); err != nil {
		return access.Grant{}, time.Time{}, false, fmt.Errorf("cluster: node %q answered a code take with %d bytes that are not a take: %w", node, len(reply.Data), err)
	}
	if !taken.Found {
		return access.Grant{}, time.Time{}, false, nil
	}
	return taken.Grant.grant(), taken.Expires, true, nil
}

// answer takes a code another node was handed from the local store.
func (r *CodeRouter) answer(m *Msg) {
	var taken takenCode
	if g, expires, ok := r.local.Take(string(m.Data)); ok {
		taken = takenCode{Found: true, Expires: expires, Grant: wireGrantOf(g)}
	}
	b, err := json.Marshal(&taken)
	if err == nil {
		err = Respond(r.bus, m, &Msg{Data: b})
	}
	if err != nil {
		// The asker times out and its client gets a 503; the code is
		// used up either way, as any code that reached a node is.
		r.log.Warn("cluster: answering a code take failed", "err", err)
	}
}

// Close stops answering other nodes' takes.
func (r *CodeRouter) Close() error { return r.sub.Unsubscribe() }

// takenCode is the answer to a take on the bus.
type takenCode struct {
	Found   bool      `json:"found"`
	Expires time.Time `json:"expires,omitzero"`
	Grant   wireGrant `json:"grant,omitzero"`
}

// wireGrant is access.Grant on the bus: every field, by name, so that a
// grant taken from another node is the one that node issued.
type wireGrant struct {
	Topic       string    `json:"topic"`
	Prefix      string    `json:"prefix"`
	CanRead     bool      `json:"can_read,omitempty"`
	CanWrite    bool      `json:"can_write,omitempty"`
	Subject     string    `json:"sub,omitempty"`
	BookingID   string    `json:"booking_id,omitempty"`
	TokenID     string    `json:"jti,omitempty"`
	TokenExpiry time.Time `json:"token_expiry,omitzero"`
	Scopes      []string  `json:"scopes,omitempty"`
	System      bool      `json:"system,omitempty"`
	Role        string    `json:"role,omitempty"`
	Session     string    `json:"session,omitempty"`
	Owner       string    `json:"owner,omitempty"`
	Labels      []string  `json:"labels,omitempty"`
	Peer        bool      `json:"peer,omitempty"`
}

func wireGrantOf(g access.Grant) wireGrant {
	return wireGrant{Topic: g.Topic, Prefix: g.Prefix, CanRead: g.CanRead, CanWrite: g.CanWrite,
		Subject: g.Subject, BookingID: g.BookingID, TokenID: g.TokenID, TokenExpiry: g.TokenExpiry,
		Scopes: g.Scopes, System: g.System, Role: g.Role, Session: g.Session, Owner: g.Owner, Labels: g.Labels, Peer: g.Peer}
}

func (w wireGrant) grant() access.Grant {
	return access.Grant{Topic: w.Topic, Prefix: w.Prefix, CanRead: w.CanRead, CanWrite: w.CanWrite,
		Identity:    relay.Identity{Subject: w.Subject, BookingID: w.BookingID, TokenID: w.TokenID},
		TokenExpiry: w.TokenExpiry, Scopes: w.Scopes, System: w.System, Role: w.Role, Session: w.Session,
		Owner: w.Owner, Labels: w.Labels, Peer: w.Peer}
}
