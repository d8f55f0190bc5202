package access

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Endpoint serves one connection type: the {prefix} of the access and
// websocket paths, and the token's "prefix" claim. The Handler does what is
// the same for every type and asks the endpoint only what differs.
//
// The Handler, for every endpoint alike: checks the Origin; verifies the
// token (signature, audience, expiry) and that its prefix claim names this
// endpoint and its topic claim matches the path; refuses a revoked booking,
// subject or token (Config.Denier) at the access request and again at the
// code exchange (or once, at a one-step connect, which the same code
// checks); issues, and takes, the one-time code; bounds the
// connections of each token and subject (Config.MaxConnsPerToken,
// MaxConnsPerSubject); checks the websocket handshake before the upgrade.
//
// The endpoint: decides what a verified token may do on one of its topics
// (Authorize), may check a redeemed code again before the upgrade
// (Admitter), and serves the upgraded connection (Serve).
type Endpoint interface {
	// Authorize decides what the verified token c allows on topic (a valid
	// topic name, matched by the token's topic claim), or refuses with the
	// error the access request answers. It is called on the access
	// request only; the code carries its Permit to the exchange. A Permit
	// that allows neither reading nor writing is refused by the Handler.
	Authorize(c *auth.Claims, topic string) (Permit, *apierr.Error)
	// Serve runs an admitted, upgraded connection until it ends; it owns
	// conn and closes it. g is the grant the code stood for; info is the
	// relay's description of the connection, built from g and the request
	// (remote address, user agent). Serve runs on a goroutine of its own,
	// and the connection counts against its token's and subject's limits
	// until Serve returns.
	Serve(ctx context.Context, conn relay.Conn, g Grant, info relay.Info)
}

// Permit is what an Endpoint allows a token on one topic; the Handler adds
// the token's identity to make the Grant a code stands for.
type Permit struct {
	CanRead, CanWrite bool
	// System marks a topic only the server publishes to (relay.Info's
	// SystemTopic).
	System bool
	// Role and Labels are the endpoint's own: the Handler only carries
	// them to Serve (in the Grant). Labels is shared, never modified.
	Role   string
	Labels []string
	// Local keeps the connection on the node that admitted the access
	// request: its code is issued here, never at the topic's home node
	// (Config.Placement). An agent's control channel is local; so is every
	// system topic (it describes its node).
	Local bool
	// Home requires the connection to be served at its topic's home node
	// (Config.Placement), where its peer connects too: a shell user meets
	// its host only there. The code of the two-step flow is issued there
	// anyway; a one-step connect (token in the bearer subprotocol) that
	// reaches another node is refused with 421 two_step_required, and the
	// client falls back to the two-step flow. Without placement (one node)
	// it changes nothing.
	Home bool
}

// HandshakeHolder is implemented by an Endpoint whose Serve hands the
// connection to relay.Accept, which completes the websocket handshake only
// once the connection is registered (relay.Handshaker): the 101 response is
// then held back until the connection can receive, so a reader misses
// nothing sent after its handshake. Other endpoints get the 101 at the
// upgrade.
type HandshakeHolder interface {
	HoldsHandshake(g Grant) bool
}

// Admitter is implemented by an Endpoint that checks a connection again at
// the code exchange, or holds a place for it, before the upgrade.
type Admitter interface {
	// Admit is called at the code exchange once the code has been taken
	// and its grant re-checked (topic, expiry, revocation), before the
	// connection limits and the upgrade. An error refuses the exchange
	// with that HTTP error. On success, if the Handler then refuses or the
	// upgrade fails, it calls the admission's Cancel; otherwise it serves
	// the connection with the admission's Serve, or the endpoint's.
	Admit(g Grant) (Admission, *apierr.Error)
}

// Admission is how an Admitter admitted a connection. The zero value means
// the connection is served by the endpoint's Serve and nothing is held.
type Admission struct {
	// Serve, if set, runs the upgraded connection instead of the
	// endpoint's Serve (e.g. hands it to the peer waiting for it), with
	// the same contract.
	Serve func(ctx context.Context, conn relay.Conn, info relay.Info)
	// Cancel, if set, gives back what Admit holds when the connection is
	// not served after all (refused by the limits, or the upgrade failed).
	Cancel func()
}

// Handle registers ep as the connection type prefix. Call it before the
// handler serves (a later call is safe, and takes effect for the requests
// that follow). It fails if prefix is not a valid name (1-32 characters of
// a-z 0-9 -) or is already registered; wire.PrefixSession is built in.
func (h *Handler) Handle(prefix string, ep Endpoint) error {
	if !validPrefix(prefix) {
		return fmt.Errorf("access: endpoint prefix %q: want 1-32 characters of a-z 0-9 -", prefix)
	}
	if ep == nil {
		return fmt.Errorf("access: endpoint %q is nil", prefix)
	}
	h.endpointsMu.Lock()
	defer h.endpointsMu.Unlock()
	old := *h.endpoints.Load()
	if _, taken := old[prefix]; taken {
		return fmt.Errorf("access: endpoint prefix %q is already registered", prefix)
	}
	next := maps.Clone(old)
	next[prefix] = ep
	h.endpoints.Store(&next)
	return nil
}

// endpoint returns the endpoint registered for prefix, or nil.
func (h *Handler) endpoint(prefix string) Endpoint { return (*h.endpoints.Load())[prefix] }

// prefixes returns the registered prefixes, sorted, for error messages.
func (h *Handler) prefixes() string {
	return strings.Join(slices.Sorted(maps.Keys(*h.endpoints.Load())), ", ")
}

// validPrefix reports whether prefix may name a connection type: the same
// alphabet as node ids (one path segment, no escaping needed).
func validPrefix(prefix string) bool { return wire.ValidNodeID(prefix) }

// IssuePeer issues a one-time code for the other side of a connection an
// endpoint has admitted (a shell session's host side) and returns the
// websocket URI that carries it. The code is bound to g's topic and prefix
// and checked at the exchange like any other (expiry, revocation of g's
// identity, the endpoint's Admit); the connection it opens counts as the
// admitted one, not again against the limits of g's token and subject.
func (h *Handler) IssuePeer(g Grant) (uri string, err error) {
	g.Peer = true
	return h.issue(g)
}

// issue stores a code for g and returns the websocket URI that carries it.
func (h *Handler) issue(g Grant) (uri string, err error) {
	code := wire.NewCode(h.cfg.NodeID)
	if err := h.cfg.Codes.Put(code, g, h.cfg.Now().Add(h.cfg.CodeTTL)); err != nil {
		return "", err
	}
	return h.uri(g, code), nil
}

// uri is the websocket URI that carries code for g.
func (h *Handler) uri(g Grant, code string) string {
	return h.wsBase + "/" + g.Prefix + "/" + g.Topic + "?code=" + code
}

// issueAtHome issues g's code at the topic's home node (Config.Placement),
// so that the connections to one topic meet on one node; here when there
// is no placement, when the connection must stay here (Permit.Local, a
// system topic), or when the home node does not answer in time.
func (h *Handler) issueAtHome(ctx context.Context, g Grant) (uri string, err error) {
	p := h.cfg.Placement
	if p == nil || g.Local || g.System {
		return h.issue(g)
	}
	home := p.Home(g.Prefix, g.Topic)
	if home == "" || home == h.cfg.NodeID {
		return h.issue(g)
	}
	ctx, cancel := context.WithTimeout(ctx, PlacementTimeout)
	defer cancel()
	code, err := p.IssueAt(ctx, home, g, h.cfg.Now().Add(h.cfg.CodeTTL))
	switch {
	case err == nil:
		return h.uri(g, code), nil
	case errors.Is(err, ErrCodeStoreFull), errors.Is(err, ErrTooManyForOwner):
		return "", err
	}
	h.cfg.Logger.Debug("access: the topic's home node issued no code; issuing here", "home", home, "err", err)
	return h.issue(g)
}
