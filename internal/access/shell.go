package access

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"switchboard/internal/apierr"
	"switchboard/internal/auth"
	"switchboard/internal/relay"
	"switchboard/internal/wsconn"
	"switchboard/pkg/wire"
)

// PrefixShell is the connection type for 1:1 sessions with a host (ssh,
// VNC, HTTP): see docs/protocol.md, "Shell sessions", and pkg/wire.
const PrefixShell = wire.PrefixShell

// Roles on the shell prefix.
const (
	roleHost    = "host"    // a host's control connection (scope host)
	roleClient  = "client"  // a user opening a session (scope client)
	roleSession = "session" // the host's side of one session (a code the relay issued)
)

// DefaultShellAnswerTimeout is how long a host has to dial a new session.
const DefaultShellAnswerTimeout = 10 * time.Second

// Internal relay topics of the shell prefix. Their names are outside the
// topic grammar (":"), so no URL can reach them.
func shellHostTopic(topic string) string { return "shell-host:" + topic }
func shellSessionTopic(id string) string { return "shell-session:" + id }

// shellHub holds the sessions waiting for their host to dial.
type shellHub struct {
	mu      sync.Mutex
	pending map[string]*pendingSession // guarded by mu; by session id
}

// pendingSession is a user's session waiting for the host's connection.
type pendingSession struct {
	topic string
	user  relay.Info      // the user's identity, for revocations
	host  chan *shellSide // capacity 1: the host's side, nil if its upgrade failed
	gone  chan struct{}   // closed when the session is withdrawn; then why says how
	why   goneReason      // written before gone is closed
}

// goneReason is how a pending session was withdrawn: the close code and
// reason its user gets.
type goneReason struct {
	code   relay.CloseCode
	reason string
}

var hostWentAway = goneReason{relay.CloseNoHost, "the host went away"}

// shellSide is the host's side of a session as its handler hands it over.
type shellSide struct {
	conn       *wsconn.Conn
	remoteAddr string
	userAgent  string
}

// shellRole decides the role of a shell token: exactly one of the scopes
// host and client.
func shellRole(c *auth.Claims) (string, *apierr.Error) {
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

// hostPresent reports whether a host's control connection serves topic.
func (h *Handler) hostPresent(topic string) bool {
	return h.cfg.Relay.Readers(shellHostTopic(topic)) > 0
}

var errHostUnavailable = apierr.New(http.StatusServiceUnavailable, wire.ErrorHostUnavailable, "no host is connected for this shell topic; retry later")

// serveShell runs an upgraded host or user connection of the shell prefix
// (the host's side of a session goes through claimSession instead).
func (h *Handler) serveShell(ctx context.Context, conn *wsconn.Conn, g Grant, info relay.Info) {
	if g.Role == roleHost {
		h.serveShellHost(ctx, conn, g, info)
		return
	}
	h.serveShellClient(ctx, conn, g, info)
}

func (h *Handler) serveShellHost(ctx context.Context, conn *wsconn.Conn, g Grant, info relay.Info) {
	hostTopic := shellHostTopic(g.Topic)
	// Newest wins: a host that reconnects takes over at once from a
	// connection the relay may not yet know is dead.
	if n := h.cfg.Relay.CloseWhere(func(i *relay.Info) bool { return i.Topic == hostTopic },
		relay.CloseSuperseded, relay.ReasonSuperseded, "another host connected for this topic"); n > 0 {
		h.cfg.Logger.Warn("access: shell host superseded by a newer connection", "topic", g.Topic)
	}
	info.Topic, info.CanRead, info.CanWrite = hostTopic, true, true
	h.cfg.Relay.Accept(ctx, conn, info)
	if !h.hostPresent(g.Topic) {
		h.failPending(g.Topic)
	}
}

// failPending tells the sessions waiting for topic's host that it is gone.
func (h *Handler) failPending(topic string) {
	h.shell.mu.Lock()
	defer h.shell.mu.Unlock()
	for id, ps := range h.shell.pending {
		if ps.topic == topic {
			delete(h.shell.pending, id)
			ps.why = hostWentAway
			close(ps.gone)
		}
	}
}

// CloseWhere withdraws the pending shell sessions whose user matches (a
// revocation): each user is closed with code and reason, and the host's
// side can no longer claim the session. Connections already in the relay
// are the relay's CloseWhere's. It returns how many sessions it withdrew.
func (h *Handler) CloseWhere(match func(*relay.Info) bool, code relay.CloseCode, reason string) int {
	h.shell.mu.Lock()
	defer h.shell.mu.Unlock()
	n := 0
	for id, ps := range h.shell.pending {
		if match(&ps.user) {
			delete(h.shell.pending, id)
			ps.why = goneReason{code, reason}
			close(ps.gone)
			n++
		}
	}
	return n
}

// shellConnect is the message a host receives for each new session.
type shellConnect struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	URI     string `json:"uri"`
}

func (h *Handler) serveShellClient(ctx context.Context, user *wsconn.Conn, g Grant, info relay.Info) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := base64.RawURLEncoding.EncodeToString(b[:])
	ps := &pendingSession{topic: g.Topic, user: info, host: make(chan *shellSide, 1), gone: make(chan struct{})}
	h.shell.mu.Lock()
	// Admission under the lock CloseWhere takes: a revocation recorded
	// since the code was redeemed is seen here, or its CloseWhere sees ps.
	if h.checkDenied(&g) != nil {
		h.shell.mu.Unlock()
		_ = user.Close(relay.CloseDenied, "denied")
		return
	}
	if h.shell.pending == nil {
		h.shell.pending = make(map[string]*pendingSession)
	}
	h.shell.pending[id] = ps
	h.shell.mu.Unlock()

	// The host's side is admitted with a code of its own, bound to the
	// session's path, and carries the user's identity for status and
	// revocation.
	hg := g
	hg.Topic, hg.Role, hg.Session, hg.Scopes = g.Topic+"/"+id, roleSession, id, []string{auth.ScopeHost}
	code := wire.NewCode(h.cfg.NodeID)
	msg, _ := json.Marshal(shellConnect{Type: "connect", Session: id,
		URI: h.wsBase + "/" + PrefixShell + "/" + hg.Topic + "?code=" + code})
	if err := h.cfg.Codes.Put(code, hg, h.cfg.Now().Add(h.cfg.CodeTTL)); err != nil ||
		h.cfg.Relay.Publish(shellHostTopic(g.Topic), relay.Message{Type: relay.Text, Data: msg}) == 0 {
		if !h.abandon(id, user, "host unavailable") { // withdrawn meanwhile
			<-ps.gone
			_ = user.Close(ps.why.code, ps.why.reason)
		}
		return
	}

	timer := time.NewTimer(h.cfg.ShellAnswerTimeout)
	defer timer.Stop()
	var host *shellSide
	select {
	case host = <-ps.host:
	case <-ps.gone:
		_ = user.Close(ps.why.code, ps.why.reason)
		return
	case <-timer.C:
		if h.abandon(id, user, "the host did not answer") {
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
	info.Topic = shellSessionTopic(id)
	hostInfo := info
	hostInfo.Scopes, hostInfo.ExpiresAt, hostInfo.RemoteAddr, hostInfo.UserAgent = hg.Scopes, time.Time{}, host.remoteAddr, host.userAgent
	h.cfg.Relay.AcceptPair(ctx, user, info, host.conn, hostInfo)
}

// abandon withdraws a pending session and closes the user with 4004. It
// returns false if the host's side had already been claimed for it.
func (h *Handler) abandon(id string, user *wsconn.Conn, why string) bool {
	h.shell.mu.Lock()
	_, ok := h.shell.pending[id]
	delete(h.shell.pending, id)
	h.shell.mu.Unlock()
	if ok {
		_ = user.Close(relay.CloseNoHost, why)
	}
	return ok
}

// claimSession takes the pending session a host's code names.
func (h *Handler) claimSession(id string) *pendingSession {
	h.shell.mu.Lock()
	defer h.shell.mu.Unlock()
	ps := h.shell.pending[id]
	delete(h.shell.pending, id)
	return ps
}
