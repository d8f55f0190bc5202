package control

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Agent enrolment (docs/jobs.md, "Enrolling an agent"): an operator with
// jobs:admin gets an agent's token from the hub, so adding a client or a
// server needs no hub secret. The agent renews the token itself through the
// refresh endpoint (serveRefresh), within --max-refresh-lifetime of its
// enrolment.

// RefreshPath is the refresh endpoint: an agent renews its token there.
const RefreshPath = wire.PathTokenRefresh

// MinEnrolTTL is the shortest lifetime of an enrolled agent's token. JWT
// times are whole seconds and the agent renews at two thirds of the
// lifetime: ten seconds leaves it three to do so.
const MinEnrolTTL = 10 * time.Second

// AgentSubjectPrefix begins the subject of every enrolled agent's token
// ("agent:c1"): revoking that subject ends all of the agent's tokens and
// their renewals.
const AgentSubjectPrefix = "agent:"

// enrolRequest is the body of POST /api/v1/agents/enrol.
type enrolRequest struct {
	ID     string   `json:"id"`
	Labels []string `json:"labels"`
	TTL    Duration `json:"ttl"`
}

// enrolResponse is its answer. The token is shown here once and stored
// nowhere.
type enrolResponse struct {
	Agent     string    `json:"agent"`
	Labels    []string  `json:"labels"`
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id"` // jti: revoke kind "token" ends this enrolment only
	Subject   string    `json:"subject"`  // revoke kind "subject" ends every token of the agent
	ExpiresAt time.Time `json:"expires_at"`
	// RefreshURL is the path the agent renews the token at, and
	// RefreshUntil the end of the renewal chain (--max-refresh-lifetime
	// after enrolment): after it, the agent must be enrolled again.
	RefreshURL   string    `json:"refresh_url"`
	RefreshUntil time.Time `json:"refresh_until"`
}

// checkEnrol validates an enrolment request.
func (h *Handler) checkEnrol(req *enrolRequest) *apierr.Error {
	bad := func(code, format string, args ...any) *apierr.Error {
		return apierr.New(http.StatusBadRequest, code, fmt.Sprintf(format, args...))
	}
	switch {
	case req.ID == "":
		return bad("invalid_id", "id is required")
	case !jobproto.ValidAgentID(req.ID):
		return bad("invalid_id", "id must be 1-%d of A-Z a-z 0-9 . _ - (one topic segment, not . or ..)", jobproto.MaxAgentIDLen)
	case len(req.Labels) > jobproto.MaxLabels:
		return bad("invalid_labels", "at most %d labels", jobproto.MaxLabels)
	case req.TTL == 0:
		return bad("invalid_ttl", "ttl is required, e.g. \"24h\" or 86400")
	case time.Duration(req.TTL) < MinEnrolTTL:
		return bad("invalid_ttl", "ttl shorter than the minimum %v", MinEnrolTTL)
	case time.Duration(req.TTL) > h.cfg.MaxTokenTTL:
		return bad("invalid_ttl", "ttl longer than the maximum %v (--max-token-ttl); the agent renews its token before it expires", h.cfg.MaxTokenTTL)
	}
	for i, l := range req.Labels {
		if !jobproto.ValidLabelGrant(l) {
			return bad("invalid_labels", "label %d: want key=value or key=* (key 1-63 of A-Z a-z 0-9 . _ -, value up to 128 of A-Z a-z 0-9 . _ : / -)", i+1)
		}
		if slices.Contains(req.Labels[:i], l) {
			return bad("invalid_labels", "label %s given twice", l)
		}
	}
	return nil
}

// serveEnrol serves POST /api/v1/agents/enrol: it mints the agent's token
// (prefix agent, topic and agent claim = the id, scope agent, the labels,
// subject agent:<id>), audits the enrolment (never the token) and answers
// with the token once.
func (h *Handler) serveEnrol(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	var req enrolRequest
	if e := decodeJSON(w, r, &req); e != nil {
		apierr.Write(w, e)
		return
	}
	if e := h.checkEnrol(&req); e != nil {
		apierr.Write(w, e)
		return
	}
	if req.Labels == nil {
		req.Labels = []string{}
	}
	subject := AgentSubjectPrefix + req.ID
	if kind, denied := h.cfg.Revocations.Denied("", subject, ""); denied {
		// A token for a revoked subject would be refused at once: say so
		// instead of handing out a dead token.
		apierr.WriteNew(w, http.StatusConflict, "agent_revoked",
			fmt.Sprintf("subject %s is revoked (%s); lift the revocation (DELETE /api/v1/revocations/subject/%s) before enrolling it again", subject, kind, subject))
		return
	}
	now := h.cfg.Now()
	claims := auth.NewClaims(h.cfg.Audience, now, time.Duration(req.TTL))
	claims.Prefix, claims.Topic, claims.Scopes = wire.PrefixAgent, req.ID, []string{auth.ScopeAgent}
	claims.Agent, claims.Labels, claims.Subject = req.ID, req.Labels, subject
	claims.OrigIssuedAt = claims.IssuedAt
	tok, err := h.cfg.Key.Sign(claims)
	if err != nil {
		h.cfg.Logger.Error("control: sign agent token", "err", err)
		apierr.WriteNew(w, http.StatusServiceUnavailable, "sign_failed", "could not sign the token")
		return
	}
	refreshUntil := now.Add(h.cfg.MaxRefreshLifetime).UTC().Truncate(time.Second)
	ev := store.AuditEvent{Time: now, Actor: c.Subject, Action: "agent.enrol", Target: "agent:" + req.ID,
		Detail: detailJSON(map[string]any{"agent": req.ID, "labels": req.Labels, "sub": subject, "token_id": claims.ID,
			"expires_at": claims.ExpiresAt.UTC().Format(time.RFC3339), "refresh_until": refreshUntil.Format(time.RFC3339)})}
	if err := h.timed("audit", func() error { _, err := h.cfg.Store.AppendAudit(r.Context(), ev); return err }); err != nil {
		h.storeError(w, "audit", err) // an unaudited token is never handed out
		return
	}
	h.cfg.Logger.Info("agent enrolled", "agent", req.ID, "labels", req.Labels, "actor", c.Subject, "token_id", claims.ID)
	apierr.WriteJSON(w, http.StatusOK, enrolResponse{
		Agent: req.ID, Labels: req.Labels, Token: tok, TokenID: claims.ID, Subject: subject,
		ExpiresAt: claims.ExpiresAt.UTC(), RefreshURL: RefreshPath, RefreshUntil: refreshUntil,
	})
}
