package access

import (
	"context"
	"fmt"
	"net/http"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/topic"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// sessionEndpoint is the built-in connection type wire.PrefixSession: shared
// topics of the relay, where every message goes to every other reader. What
// a token may do is what its read and write scopes say, except on the
// system's topics (system.go).
type sessionEndpoint struct{ h *Handler }

// Authorize implements Endpoint.
func (s sessionEndpoint) Authorize(c *auth.Claims, name string) (Permit, *apierr.Error) {
	p := Permit{CanRead: c.HasScope(auth.ScopeRead), CanWrite: c.HasScope(auth.ScopeWrite)}
	if pp, ok := s.h.practableStatsPermit(c, name, s.h.cfg.SystemTopics[name]); ok {
		return pp, nil
	}
	if scope, ok := s.h.cfg.SystemTopics[name]; ok {
		if !c.Allows(scope) {
			return Permit{}, apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, fmt.Sprintf("topic %s needs scope %s", name, scope))
		}
		return Permit{CanRead: true, System: true}, nil
	}
	if scope, ok := s.h.systemPrefixScope(name); ok {
		if !p.CanRead {
			return Permit{}, apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, "topic "+name+" is written by the server only; it needs scope read")
		}
		if topic.IsPattern(c.Topic) && !c.Allows(scope) {
			return Permit{}, apierr.New(http.StatusForbidden, wire.ErrorTopicForbidden, fmt.Sprintf("topic %s is the system's: it needs a token for that one topic, or scope %s", name, scope))
		}
		return Permit{CanRead: true, System: true}, nil
	}
	return p, nil
}

// HoldsHandshake implements HandshakeHolder: Serve is relay.Accept.
func (sessionEndpoint) HoldsHandshake(Grant) bool { return true }

// Serve implements Endpoint: the connection joins its topic in the relay
// (practable's stats feed: PractableStatsRelayTopic), merging what is
// queued for it if its topic is one of Config.Coalesce. The server's own
// topics are never merged: each of their messages is a JSON document.
func (s sessionEndpoint) Serve(ctx context.Context, conn relay.Conn, g Grant, info relay.Info) {
	switch {
	case g.Role == rolePractableStats:
		info.Topic = PractableStatsRelayTopic
		conn = updateTap{Conn: conn, update: s.h.cfg.PractableStats.Update}
	case !info.SystemTopic:
		info.Coalesce = s.h.coalesces(info.Topic)
	}
	s.h.cfg.Relay.Accept(ctx, conn, info)
}
