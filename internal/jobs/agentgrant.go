package jobs

import "time"

// AgentGrant is what an agent's token allows, as the agent control channel's
// endpoint (internal/jobs/agentlink) admitted it: the Manager takes the
// channel with AcceptAgent.
type AgentGrant struct {
	ID          string   // the agent id (the topic)
	Labels      []string // labels the agent may claim ("key=value" or "key=*"); shared, never modified
	Subject     string
	BookingID   string
	TokenID     string
	TokenExpiry time.Time // zero: none
	RemoteAddr  string
	UserAgent   string
}

// Denier reports revocations (internal/control's Revocations implements
// it). The agent link calls it under its own lock (agentlink.LinkConfig),
// so it must be fast (an in-memory lookup) and must not call back.
type Denier interface {
	// Denied reports whether a token with these claims is revoked, and
	// the revocation's kind ("booking", "subject" or "token").
	Denied(bookingID, subject, tokenID string) (kind string, denied bool)
}
