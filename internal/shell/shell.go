// Package shell serves the connection type "shell" (pkg/wire PrefixShell):
// 1:1 sessions between a user and a host (ssh, VNC, a database, any TCP
// service) that the server pairs, as an access endpoint (access.Endpoint,
// access.Admitter). docs/protocol.md, "Shell sessions", describes it for
// clients.
//
// A shell token has exactly one of the scopes host and client:
//
//   - a host holds a control connection on its topic (newest wins: a host
//     that reconnects supersedes the old connection with 4009);
//   - a user's connection (client) is refused with 503 host_unavailable
//     while no host is connected; once admitted it waits, pending, while the
//     endpoint sends the host a {"type":"connect"} message with a URI of its
//     own (a code issued by access.Handler.IssuePeer, bound to the path
//     "{topic}/{session id}");
//   - the host's side of the session (role session) redeems that code and
//     is paired with the user (relay.Server.AcceptPair, backpressure, no
//     drops). It counts as the user's connection, not again against the
//     limits of the user's token and subject.
//
// A pending user is closed with 4004 when the host does not answer within
// Config.AnswerTimeout or goes away, and with the revocation's code when
// its booking, subject or token is revoked (Endpoint.CloseWhere); the
// host's side can then no longer claim the session (410 session_gone).
//
// Everything else — tokens, codes, revocation checks at the access request
// and the exchange, connection limits, Origin — is access's, the same as
// for every connection type.
//
// Locking: Endpoint.mu guards the pending sessions only; nothing blocks
// while holding it (no socket I/O, no relay call), except the access
// handler's revocation lookup (CheckDenied, an in-memory map), which is
// taken under it on purpose: see serveClient.
package shell

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// DefaultAnswerTimeout is how long a host has to dial a new session.
const DefaultAnswerTimeout = 10 * time.Second

// Roles on the shell prefix (access.Permit.Role, access.Grant.Role).
const (
	roleHost    = "host"    // a host's control connection (scope host)
	roleClient  = "client"  // a user opening a session (scope client)
	roleSession = "session" // the host's side of one session (a code the endpoint issued)
)

// Internal relay topics of the shell prefix. Their names are outside the
// topic grammar (":"), so no URL can reach them.
func hostTopic(topic string) string       { return "shell-host:" + topic }
func sessionTopic(id string) string       { return "shell-session:" + id }
func sessionPath(topic, id string) string { return topic + "/" + id }

// Access is what the endpoint needs of the access handler
// (*access.Handler implements it).
type Access interface {
	// IssuePeer issues the code of a session's host side.
	IssuePeer(g access.Grant) (uri string, err error)
	// CheckDenied refuses a grant whose booking, subject or token is
	// revoked.
	CheckDenied(g *access.Grant) *apierr.Error
}

// Config configures an Endpoint.
type Config struct {
	// Access issues the host sides' codes and checks revocations. Required.
	Access Access
	// Relay carries the hosts' control connections and the sessions.
	// Required.
	Relay *relay.Server
	// AnswerTimeout is how long a host has to dial a new session; 0 means
	// DefaultAnswerTimeout.
	AnswerTimeout time.Duration
	// Logger receives the endpoint's events; nil discards them.
	Logger *slog.Logger
}

// Endpoint is the shell connection type. Register it with the access
// handler (access.Handler.Handle(wire.PrefixShell, e)), and with the
// revocations (CloseWhere), so that a revoked user waiting for its host is
// closed at once.
type Endpoint struct {
	cfg Config

	mu      sync.Mutex
	pending map[string]*pendingSession // guarded by mu; by session id
}

// New returns an Endpoint for cfg.
func New(cfg Config) (*Endpoint, error) {
	if cfg.Access == nil || cfg.Relay == nil {
		return nil, errors.New("shell: Access and Relay are required")
	}
	if cfg.AnswerTimeout < 0 {
		return nil, fmt.Errorf("shell: answer timeout %v: must not be negative; 0 means %v", cfg.AnswerTimeout, DefaultAnswerTimeout)
	}
	if cfg.AnswerTimeout == 0 {
		cfg.AnswerTimeout = DefaultAnswerTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Endpoint{cfg: cfg, pending: make(map[string]*pendingSession)}, nil
}

// pendingSession is a user's session waiting for the host's connection.
// Its fields are set before it is published in Endpoint.pending, except
// why, which is written once, by whoever removes it from pending to
// withdraw it, before gone is closed.
type pendingSession struct {
	topic string
	user  relay.Info     // the user's identity, for revocations
	host  chan *hostSide // capacity 1: the host's side, nil if its upgrade failed
	gone  chan struct{}  // closed when the session is withdrawn; then why says how
	why   goneReason     // written before gone is closed
}

// goneReason is how a pending session was withdrawn: the close code and
// reason its user gets.
type goneReason struct {
	code   relay.CloseCode
	reason string
}

var hostWentAway = goneReason{relay.CloseNoHost, "the host went away"}

// hostSide is the host's side of a session as its exchange hands it over.
type hostSide struct {
	conn       relay.Conn
	remoteAddr string
	userAgent  string
}

var (
	errHostUnavailable = apierr.New(http.StatusServiceUnavailable, wire.ErrorHostUnavailable, "no host is connected for this shell topic; retry later")
	errSessionGone     = apierr.New(http.StatusGone, wire.ErrorSessionGone, "the shell session has ended")
)

// roleOf decides the role of a shell token: exactly one of the scopes host
// and client.
func roleOf(c *auth.Claims) (string, *apierr.Error) {
	host, client := c.HasScope(auth.ScopeHost), c.HasScope(auth.ScopeClient)
	switch {
	case host && client:
		return "", apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, "a shell token has scope host or client, not both")
	case host:
		return roleHost, nil
	case client:
		return roleClient, nil
	}
	return "", apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, "a shell token needs scope host or client")
}

// hostPresent reports whether a host's control connection serves topic on
// this node.
func (e *Endpoint) hostPresent(topic string) bool {
	return e.cfg.Relay.Readers(hostTopic(topic)) > 0
}

// hostAnywhere reports whether a host's control connection serves topic on
// this node or another of the cluster. A user's code is issued at the
// topic's home node, where its host connects too (both through access
// placement), so the access request may arrive anywhere.
func (e *Endpoint) hostAnywhere(topic string) bool {
	return e.hostPresent(topic) || e.cfg.Relay.ReadElsewhere(hostTopic(topic))
}

// Authorize implements access.Endpoint: hosts and users both read and
// write; a user is refused while no host is connected anywhere.
func (e *Endpoint) Authorize(c *auth.Claims, topic string) (access.Permit, *apierr.Error) {
	role, err := roleOf(c)
	if err != nil {
		return access.Permit{}, err
	}
	if role == roleClient && !e.hostAnywhere(topic) {
		return access.Permit{}, errHostUnavailable
	}
	// Home: a user and its host meet at the topic's home node only.
	return access.Permit{CanRead: true, CanWrite: true, Role: role, Home: true}, nil
}

// Admit implements access.Admitter: a user is refused if its host has gone
// since the access request; a session's host side claims its pending
// session, and is handed to it once upgraded.
func (e *Endpoint) Admit(g access.Grant) (access.Admission, *apierr.Error) {
	switch g.Role {
	case roleClient:
		if !e.hostPresent(g.Topic) {
			return access.Admission{}, errHostUnavailable
		}
	case roleSession:
		ps := e.claim(g.Session)
		if ps == nil {
			return access.Admission{}, errSessionGone
		}
		// The user's goroutine (serveClient) runs the pair.
		return access.Admission{
			Serve: func(_ context.Context, conn relay.Conn, info relay.Info) {
				ps.host <- &hostSide{conn: conn, remoteAddr: info.RemoteAddr, userAgent: info.UserAgent}
			},
			Cancel: func() { ps.host <- nil },
		}, nil
	}
	return access.Admission{}, nil
}

// HoldsHandshake implements access.HandshakeHolder for hosts' control
// connections, which relay.Accept serves: a host whose handshake has
// returned is registered, so a user who asks right after finds it.
func (e *Endpoint) HoldsHandshake(g access.Grant) bool { return g.Role == roleHost }

// Serve implements access.Endpoint for hosts' control connections and
// users; a session's host side is served by its Admission.
func (e *Endpoint) Serve(ctx context.Context, conn relay.Conn, g access.Grant, info relay.Info) {
	switch g.Role {
	case roleHost:
		e.serveHost(ctx, conn, g, info)
	case roleClient:
		e.serveClient(ctx, conn, g, info)
	default: // a session's host side whose Admission was bypassed: a bug
		e.cfg.Logger.Error("shell: connection with an unexpected role", "role", g.Role, "topic", g.Topic)
		_ = conn.Close(relay.ClosePolicy, "unexpected shell role")
	}
}

func (e *Endpoint) serveHost(ctx context.Context, conn relay.Conn, g access.Grant, info relay.Info) {
	topic := hostTopic(g.Topic)
	// Newest wins: a host that reconnects takes over at once from a
	// connection the relay may not yet know is dead.
	if n := e.cfg.Relay.CloseWhere(func(i *relay.Info) bool { return i.Topic == topic },
		relay.CloseSuperseded, relay.ReasonSuperseded, "another host connected for this topic"); n > 0 {
		e.cfg.Logger.Warn("shell: host superseded by a newer connection", "topic", g.Topic)
	}
	info.Topic, info.CanRead, info.CanWrite = topic, true, true
	e.cfg.Relay.Accept(ctx, conn, info)
	if !e.hostPresent(g.Topic) {
		e.failPending(g.Topic)
	}
}

// failPending tells the sessions waiting for topic's host that it is gone.
func (e *Endpoint) failPending(topic string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, ps := range e.pending {
		if ps.topic == topic {
			delete(e.pending, id)
			ps.why = hostWentAway
			close(ps.gone)
		}
	}
}

// CloseWhere withdraws the pending sessions whose user's identity m
// matches (a revocation): each user is closed with code and reason, and the
// host's side can no longer claim the session. Connections already in the
// relay are the relay's CloseWhere's. It returns how many sessions it
// withdrew.
func (e *Endpoint) CloseWhere(m relay.IdentityMatch, code relay.CloseCode, reason string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for id, ps := range e.pending {
		if m.Matches(ps.user.Identity) {
			delete(e.pending, id)
			ps.why = goneReason{code, reason}
			close(ps.gone)
			n++
		}
	}
	return n
}

// connectMessage is the message a host receives for each new session.
type connectMessage struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	URI     string `json:"uri"`
}

func (e *Endpoint) serveClient(ctx context.Context, user relay.Conn, g access.Grant, info relay.Info) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := base64.RawURLEncoding.EncodeToString(b[:])
	ps := &pendingSession{topic: g.Topic, user: info, host: make(chan *hostSide, 1), gone: make(chan struct{})}
	e.mu.Lock()
	// Admission under the lock CloseWhere takes: a revocation recorded
	// since the code was redeemed is seen here, or its CloseWhere sees ps.
	if e.cfg.Access.CheckDenied(&g) != nil {
		e.mu.Unlock()
		_ = user.Close(relay.CloseDenied, "denied")
		return
	}
	e.pending[id] = ps
	e.mu.Unlock()

	// The host's side is admitted with a code of its own, bound to the
	// session's path, and carries the user's identity for status and
	// revocation.
	hg := g
	hg.Topic, hg.Role, hg.Session, hg.Scopes = sessionPath(g.Topic, id), roleSession, id, []string{auth.ScopeHost}
	uri, err := e.cfg.Access.IssuePeer(hg)
	var published int
	if err == nil {
		msg, _ := json.Marshal(connectMessage{Type: "connect", Session: id, URI: uri})
		published = e.cfg.Relay.Publish(hostTopic(g.Topic), relay.Message{Type: relay.Text, Data: msg})
	}
	if published == 0 {
		if !e.abandon(id, user, "host unavailable") { // withdrawn meanwhile
			<-ps.gone
			_ = user.Close(ps.why.code, ps.why.reason)
		}
		return
	}

	timer := time.NewTimer(e.cfg.AnswerTimeout)
	defer timer.Stop()
	var host *hostSide
	select {
	case host = <-ps.host:
	case <-ps.gone:
		_ = user.Close(ps.why.code, ps.why.reason)
		return
	case <-timer.C:
		if e.abandon(id, user, "the host did not answer") {
			return
		}
		// No longer pending: either the host's side claimed it just in
		// time, or it was withdrawn (gone) at the same moment.
		select {
		case host = <-ps.host:
		case <-ps.gone:
			_ = user.Close(ps.why.code, ps.why.reason)
			return
		}
	}
	if host == nil {
		_ = user.Close(relay.CloseNoHost, "the host could not connect")
		return
	}
	info.Topic = sessionTopic(id)
	hostInfo := info
	hostInfo.Scopes, hostInfo.ExpiresAt, hostInfo.RemoteAddr, hostInfo.UserAgent = hg.Scopes, time.Time{}, host.remoteAddr, host.userAgent
	e.cfg.Relay.AcceptPair(ctx, user, info, host.conn, hostInfo)
}

// abandon withdraws a pending session and closes the user with 4004. It
// returns false if the session was no longer pending (claimed by the host's
// side, or withdrawn).
func (e *Endpoint) abandon(id string, user relay.Conn, why string) bool {
	e.mu.Lock()
	_, ok := e.pending[id]
	delete(e.pending, id)
	e.mu.Unlock()
	if ok {
		_ = user.Close(relay.CloseNoHost, why)
	}
	return ok
}

// claim takes the pending session a host's code names, or nil.
func (e *Endpoint) claim(id string) *pendingSession {
	e.mu.Lock()
	defer e.mu.Unlock()
	ps := e.pending[id]
	delete(e.pending, id)
	return ps
}
