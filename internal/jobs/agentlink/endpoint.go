package agentlink

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Acceptor takes agents' control channels (*Link implements it).
type Acceptor interface {
	// AcceptAgent serves an agent's control channel until it ends; it
	// owns conn and closes it.
	AcceptAgent(conn relay.Conn, g jobs.AgentGrant)
}

// Endpoint is the agent connection type: register it with
// access.Handler.Handle(wire.PrefixAgent, e). It holds no state of its own.
type Endpoint struct {
	agents Acceptor // set by New, never changed
}

// New returns the Endpoint that hands channels to agents.
func New(agents Acceptor) (*Endpoint, error) {
	if agents == nil {
		return nil, errors.New("agentlink: an Acceptor is required")
	}
	return &Endpoint{agents: agents}, nil
}

// Authorize implements access.Endpoint: the token needs scope agent and an
// agent claim naming the topic, which is one segment (the agent id). A
// channel reads and writes, and may claim the token's labels.
func (*Endpoint) Authorize(c *auth.Claims, topic string) (access.Permit, *apierr.Error) {
	if !c.HasScope(auth.ScopeAgent) {
		return access.Permit{}, apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, "the agent control channel needs scope agent")
	}
	if c.Agent != topic {
		return access.Permit{}, apierr.New(http.StatusForbidden, wire.ErrorAgentForbidden, "the token's agent claim must name this agent")
	}
	if strings.Contains(topic, "/") {
		return access.Permit{}, apierr.New(http.StatusBadRequest, wire.ErrorInvalidTopic, "an agent id is one topic segment (no /)")
	}
	// Local: the agent's channel stays on the node it reached; jobs reach
	// it there through the bus.
	return access.Permit{CanRead: true, CanWrite: true, Labels: c.Labels, Local: true}, nil
}

// Serve implements access.Endpoint: the channel is the Acceptor's.
func (e *Endpoint) Serve(_ context.Context, conn relay.Conn, g access.Grant, info relay.Info) {
	e.agents.AcceptAgent(conn, jobs.AgentGrant{
		ID: g.Topic, Labels: g.Labels, Subject: g.Subject, BookingID: g.BookingID, TokenID: g.TokenID,
		TokenExpiry: g.TokenExpiry, RemoteAddr: info.RemoteAddr, UserAgent: info.UserAgent,
	})
}
