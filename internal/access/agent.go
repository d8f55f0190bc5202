package access

import (
	"context"
	"net/http"
	"strings"

	"switchboard/internal/apierr"
	"switchboard/internal/auth"
	"switchboard/internal/relay"
	"switchboard/pkg/wire"
)

// agentEndpoint serves PrefixAgent through Config.Agents.
type agentEndpoint struct{ agents AgentAcceptor }

// Authorize implements Endpoint.
func (agentEndpoint) Authorize(c *auth.Claims, name string) (Permit, *apierr.Error) {
	if !c.HasScope(auth.ScopeAgent) {
		return Permit{}, apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, "the agent control channel needs scope agent")
	}
	if c.Agent != name {
		return Permit{}, apierr.New(http.StatusForbidden, wire.ErrorAgentForbidden, "the token's agent claim must name this agent")
	}
	if strings.Contains(name, "/") {
		return Permit{}, apierr.New(http.StatusBadRequest, wire.ErrorInvalidTopic, "an agent id is one topic segment (no /)")
	}
	return Permit{CanRead: true, CanWrite: true, Labels: c.Labels}, nil
}

// Serve implements Endpoint.
func (e agentEndpoint) Serve(_ context.Context, conn relay.Conn, g Grant, info relay.Info) {
	e.agents.AcceptAgent(conn, AgentGrant{ID: g.Topic, Labels: g.Labels, Subject: g.Subject, BookingID: g.BookingID, TokenID: g.TokenID,
		TokenExpiry: g.TokenExpiry, RemoteAddr: info.RemoteAddr, UserAgent: info.UserAgent})
}
