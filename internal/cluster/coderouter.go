package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
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
	// leaving is set when this node starts shutting down: it is no
	// topic's home any more, so the codes issued from then on are held by
	// nodes that stay.
	leaving atomic.Bool
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

// The operations on a node's codes service, in the HeaderCodeOp header.
const (
	HeaderCodeOp = "Sb-Op"
	codeOpTake   = "take"  // Data: the code; answer: takenCode
	codeOpIssue  = "issue" // Data: issueRequest; answer: issuedCode
)

// Take takes code from node (access.RemoteCodes).
func (r *CodeRouter) Take(ctx context.Context, node, code string) (access.Grant, time.Time, bool, error) {
	subject := NodeSubject(r.prefix, node, codesService)
	if err := ValidSubject(subject); err != nil {
		return access.Grant{}, time.Time{}, false, err
	}
	reply, err := r.bus.Request(ctx, &Msg{Subject: subject, Header: Header{HeaderCodeOp: codeOpTake}, Data: []byte(code)})
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

// Home returns the home node of prefix/topic among the members up now
// (access.Placement): the member with the highest rendezvous score, so
// every node picks the same one, and when a member comes or goes only the
// topics whose home it is, or becomes, move.
func (r *CodeRouter) Home(prefix, topic string) string {
	self, leaving := r.bus.NodeID(), r.leaving.Load()
	best, bestScore := "", uint64(0)
	for _, m := range r.bus.Members() {
		if leaving && m.ID == self {
			continue
		}
		if s := rendezvousScore(m.ID, prefix, topic); best == "" || s > bestScore {
			best, bestScore = m.ID, s
		}
	}
	return best
}

// rendezvousScore is node's score for prefix/topic: FNV-1a (64 bits) of
// the three, separated by bytes that none of them contains, then mixed
// (FNV alone leaves the scores of similar names correlated).
func rendezvousScore(node, prefix, topic string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for _, part := range [...]string{node, prefix, topic} {
		for i := 0; i < len(part); i++ {
			h = (h ^ uint64(part[i])) * prime
		}
		h *= prime // FNV-1a of a 0 byte: the separator
	}
	// splitmix64's finalizer.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// Leave marks this node as leaving the cluster (it is shutting down): from
// now on it is no topic's home, here and, as it refuses to issue for other
// nodes, there; codes it already holds can still be taken until it stops.
func (r *CodeRouter) Leave() { r.leaving.Store(true) }

// IssueAt has node issue a code for g, valid until expires
// (access.Placement).
func (r *CodeRouter) IssueAt(ctx context.Context, node string, g access.Grant, expires time.Time) (string, error) {
	subject := NodeSubject(r.prefix, node, codesService)
	if err := ValidSubject(subject); err != nil {
		return "", err
	}
	body, err := json.Marshal(&issueRequest{Grant: wireGrantOf(g), Expires: expires})
	if err != nil {
		return "", err
	}
	reply, err := r.bus.Request(ctx, &Msg{Subject: subject, Header: Header{HeaderCodeOp: codeOpIssue}, Data: body})
	if err != nil {
		return "", err
	}
	var issued issuedCode
	if err := json.Unmarshal(reply.Data, &issued); err != nil {
		return "", fmt.Errorf("cluster: node %q answered a code issue with %d bytes that are not an answer: %w", node, len(reply.Data), err)
	}
	switch issued.Error {
	case "":
		// The code must name the node asked, or the client's handshake
		// would be routed elsewhere.
		if issuer, ok := wire.ParseCode(issued.Code); !ok || issuer != node {
			return "", fmt.Errorf("cluster: node %q issued a code that does not name it", node)
		}
		return issued.Code, nil
	case issueFull:
		return "", access.ErrCodeStoreFull
	case issueOwnerLimit:
		return "", access.ErrTooManyForOwner
	case issueLeaving:
		return "", fmt.Errorf("cluster: node %q is leaving", node)
	}
	return "", fmt.Errorf("cluster: node %q could not issue a code: %s", node, issued.Error)
}

// answer serves another node's request on this node's codes.
func (r *CodeRouter) answer(m *Msg) {
	var reply any
	switch m.Header[HeaderCodeOp] {
	case codeOpTake, "":
		reply = r.take(string(m.Data))
	case codeOpIssue:
		reply = r.issue(m.Data)
	default:
		reply = &issuedCode{Error: "unknown operation"}
	}
	b, err := json.Marshal(reply)
	if err == nil {
		err = Respond(r.bus, m, &Msg{Header: Header{HeaderSource: r.bus.NodeID()}, Data: b})
	}
	if err != nil {
		// The asker times out and its client gets a 503; the code is
		// used up either way, as any code that reached a node is.
		r.log.Warn("cluster: answering a code take failed", "err", err)
	}
}

// take takes a code another node was handed from the local store.
func (r *CodeRouter) take(code string) *takenCode {
	if g, expires, ok := r.local.Take(code); ok {
		return &takenCode{Found: true, Expires: expires, Grant: wireGrantOf(g)}
	}
	return &takenCode{}
}

// issue stores a code for the grant another node was asked for, here.
func (r *CodeRouter) issue(data []byte) *issuedCode {
	if r.leaving.Load() {
		return &issuedCode{Error: issueLeaving}
	}
	var req issueRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return &issuedCode{Error: "bad request"}
	}
	code := wire.NewCode(r.bus.NodeID())
	switch err := r.local.Put(code, req.Grant.grant(), req.Expires); {
	case err == nil:
		return &issuedCode{Code: code}
	case errors.Is(err, access.ErrCodeStoreFull):
		return &issuedCode{Error: issueFull}
	case errors.Is(err, access.ErrTooManyForOwner):
		return &issuedCode{Error: issueOwnerLimit}
	default:
		return &issuedCode{Error: "store failed"}
	}
}

// Close stops answering other nodes' requests.
func (r *CodeRouter) Close() error { return r.sub.Unsubscribe() }

// issueRequest asks a node to issue a code.
type issueRequest struct {
	Grant   wireGrant `json:"grant"`
	Expires time.Time `json:"expires"`
}

// issuedCode is the answer to an issueRequest: the code, or why not.
type issuedCode struct {
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// Reasons a node gives for not issuing a code.
const (
	issueFull       = "full"        // access.ErrCodeStoreFull
	issueOwnerLimit = "owner_limit" // access.ErrTooManyForOwner
	issueLeaving    = "leaving"     // the node is shutting down (Leave)
)

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
	Local       bool      `json:"local,omitempty"`
}

func wireGrantOf(g access.Grant) wireGrant {
	return wireGrant{Topic: g.Topic, Prefix: g.Prefix, CanRead: g.CanRead, CanWrite: g.CanWrite,
		Subject: g.Subject, BookingID: g.BookingID, TokenID: g.TokenID, TokenExpiry: g.TokenExpiry,
		Scopes: g.Scopes, System: g.System, Role: g.Role, Session: g.Session, Owner: g.Owner, Labels: g.Labels, Peer: g.Peer, Local: g.Local}
}

func (w wireGrant) grant() access.Grant {
	return access.Grant{Topic: w.Topic, Prefix: w.Prefix, CanRead: w.CanRead, CanWrite: w.CanWrite,
		Identity:    relay.Identity{Subject: w.Subject, BookingID: w.BookingID, TokenID: w.TokenID},
		TokenExpiry: w.TokenExpiry, Scopes: w.Scopes, System: w.System, Role: w.Role, Session: w.Session,
		Owner: w.Owner, Labels: w.Labels, Peer: w.Peer, Local: w.Local}
}
