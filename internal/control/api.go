package control

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/topic"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// revocationJSON is a revocation as the API shows it.
type revocationJSON struct {
	Kind      store.RevocationKind `json:"kind"`
	Value     string               `json:"value"`
	Reason    string               `json:"reason,omitempty"`
	Actor     string               `json:"actor,omitempty"`
	CreatedAt time.Time            `json:"created_at"`
	ExpiresAt time.Time            `json:"expires_at"`
}

func toRevocationJSON(rv store.Revocation) revocationJSON {
	return revocationJSON{rv.Kind, rv.Value, rv.Reason, rv.Actor, rv.CreatedAt.UTC(), rv.ExpiresAt.UTC()}
}

func (h *Handler) serveListRevocations(w http.ResponseWriter, r *http.Request, _ *auth.Claims) {
	kind := store.RevocationKind(r.URL.Query().Get("kind"))
	if kind != "" && !kind.Valid() {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_kind", "kind must be booking, subject or token")
		return
	}
	out := struct {
		Revocations []revocationJSON `json:"revocations"`
	}{Revocations: []revocationJSON{}}
	for _, rv := range h.cfg.Revocations.List(kind) {
		out.Revocations = append(out.Revocations, toRevocationJSON(rv))
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

// revocationRequest is the body of POST /api/v1/revocations.
type revocationRequest struct {
	Kind      store.RevocationKind `json:"kind"`
	Value     string               `json:"value"`
	Reason    string               `json:"reason"`
	ExpiresAt *time.Time           `json:"expires_at"` // RFC 3339
	TTL       *Duration            `json:"ttl"`        // alternative to expires_at, e.g. "2h"
}

func (h *Handler) serveAddRevocation(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	var req revocationRequest
	if e := decodeJSON(w, r, &req); e != nil {
		apierr.Write(w, e)
		return
	}
	now := h.cfg.Now()
	if !req.Kind.Valid() {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_kind", "kind must be booking, subject or token")
		return
	}
	if e := checkValue("value", req.Value); e != nil {
		apierr.Write(w, e)
		return
	}
	if len(req.Reason) > maxRevocationReasonLen {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_reason", fmt.Sprintf("reason longer than %d bytes", maxRevocationReasonLen))
		return
	}
	var exp time.Time
	switch {
	case req.ExpiresAt != nil && req.TTL != nil:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_expiry", "give expires_at or ttl, not both")
		return
	case req.ExpiresAt != nil:
		exp = *req.ExpiresAt
	case req.TTL != nil:
		exp = now.Add(time.Duration(*req.TTL))
	default:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_expiry", "expires_at (RFC 3339) or ttl (e.g. \"2h\") is required")
		return
	}
	if !exp.After(now) || exp.After(now.AddDate(10, 0, 0)) {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_expiry", "expiry must be in the future and within ten years")
		return
	}
	rv := store.Revocation{Kind: req.Kind, Value: req.Value, Reason: req.Reason, ExpiresAt: exp}
	if err := h.revoke(r.Context(), rv, c, "revoke"); err != nil {
		h.storeError(w, "revoke", err)
		return
	}
	rv.Actor, rv.CreatedAt = c.Subject, now
	apierr.WriteJSON(w, http.StatusOK, toRevocationJSON(rv))
}

func (h *Handler) serveRemoveRevocation(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	kind, value := store.RevocationKind(r.PathValue("kind")), r.PathValue("value")
	if !kind.Valid() {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_kind", "kind must be booking, subject or token")
		return
	}
	if e := checkValue("value", value); e != nil {
		apierr.Write(w, e)
		return
	}
	if _, err := h.unrevoke(r.Context(), kind, value, nil, c, "unrevoke"); err != nil {
		h.storeError(w, "unrevoke", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// --- audit ---

type auditJSON struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor,omitempty"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Detail any       `json:"detail,omitempty"`
}

// newAuditJSON is the document of the audit event ev.
func newAuditJSON(ev store.AuditEvent) auditJSON {
	a := auditJSON{ID: ev.ID, Time: ev.Time.UTC(), Actor: ev.Actor, Action: ev.Action, Target: ev.Target, Reason: ev.Reason}
	if ev.Detail != "" {
		a.Detail = jsonRaw(ev.Detail)
	}
	return a
}

// maxAuditPage bounds one page of the audit log.
const maxAuditPage = 1000

func (h *Handler) serveAudit(w http.ResponseWriter, r *http.Request, _ *auth.Claims) {
	q := r.URL.Query()
	var since time.Time
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			n, nerr := strconv.ParseInt(s, 10, 64)
			if nerr != nil {
				apierr.WriteNew(w, http.StatusBadRequest, "invalid_since", "since must be RFC 3339 or unix seconds")
				return
			}
			t = time.Unix(n, 0)
		}
		since = t
	}
	var after int64
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_after", "after must be an event id (a non-negative integer)")
			return
		}
		after = n
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxAuditPage {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_limit", fmt.Sprintf("limit must be 1 to %d", maxAuditPage))
			return
		}
		limit = n
	}
	switch order := q.Get("order"); order {
	case "", "asc":
	case "desc":
		h.serveAuditNewest(w, r, store.AuditFilter{AfterID: after, Since: since, Limit: limit})
		return
	default:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_order", "order must be asc (oldest first, the default) or desc (newest first)")
		return
	}
	var evs []store.AuditEvent
	err := h.timed("audit", func() (err error) {
		evs, err = h.cfg.Store.Audit(r.Context(), after, since, limit)
		return err
	})
	if err != nil {
		h.storeError(w, "audit", err)
		return
	}
	out := struct {
		Events    []auditJSON `json:"events"`
		NextAfter int64       `json:"next_after"`
	}{Events: []auditJSON{}, NextAfter: after}
	for _, ev := range evs {
		out.Events = append(out.Events, newAuditJSON(ev))
		out.NextAfter = ev.ID
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

// serveAuditNewest answers GET /api/v1/audit?order=desc: a page of the
// audit log newest first, with before (older than this id) or after (the
// page just newer than this id), actor, action, since and until (RFC 3339,
// until exclusive) as filters; f holds after, since and limit already.
// older_before and newer_after are the bounds of the pages on either
// side, 0 when there is none.
func (h *Handler) serveAuditNewest(w http.ResponseWriter, r *http.Request, f store.AuditFilter) {
	q := r.URL.Query()
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_before", "before must be an event id (a positive integer)")
			return
		}
		f.BeforeID = n
	}
	if s := q.Get("until"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_until", "until must be RFC 3339")
			return
		}
		f.Until = t
	}
	f.Actor, f.Action = q.Get("actor"), q.Get("action")
	var evs, older, newer []store.AuditEvent
	err := h.timed("audit", func() (err error) {
		if evs, err = h.cfg.Store.AuditPage(r.Context(), f); err != nil || len(evs) == 0 {
			return err
		}
		// One event past each end says whether there is a page there.
		side := f
		side.Limit, side.AfterID, side.BeforeID = 1, 0, evs[len(evs)-1].ID
		if older, err = h.cfg.Store.AuditPage(r.Context(), side); err != nil {
			return err
		}
		side.AfterID, side.BeforeID = evs[0].ID, 0
		newer, err = h.cfg.Store.AuditPage(r.Context(), side)
		return err
	})
	if err != nil {
		h.storeError(w, "audit", err)
		return
	}
	out := struct {
		Events      []auditJSON `json:"events"`
		OlderBefore int64       `json:"older_before"`
		NewerAfter  int64       `json:"newer_after"`
	}{Events: []auditJSON{}}
	for _, ev := range evs {
		out.Events = append(out.Events, newAuditJSON(ev))
	}
	if len(older) > 0 {
		out.OlderBefore = evs[len(evs)-1].ID
	}
	if len(newer) > 0 {
		out.NewerAfter = evs[0].ID
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

// --- token API ---

// tokenRequest is the body of POST /api/v1/tokens.
type tokenRequest struct {
	Topic     string   `json:"topic"`
	Prefix    string   `json:"prefix"`
	Scopes    []string `json:"scopes"`
	BookingID string   `json:"booking_id"`
	Sub       string   `json:"sub"`
	TTL       Duration `json:"ttl"`
}

type tokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// connectionScopes are the scopes of a connection on the session prefix:
// all an issuer (relay:issue) may grant, and what a minter (relay:mint) may
// grant besides the scopes it holds.
var connectionScopes = map[string]bool{auth.ScopeRead: true, auth.ScopeWrite: true}

// checkMint checks a token request against what its minter may grant, and
// gives a minter that may mint for itself only its own subject when the
// request names none (docs/control.md, "Token API"):
//   - relay:admin mints anything for anyone;
//   - read and write on a topic outside the system's (access.SystemScope)
//     are granted by relay:mint and relay:issue; a topic within the
//     system's needs the minter to be allowed its scope (jobs:admin for
//     jobs/…, relay:stats for stats and agents);
//   - any other scope only by a relay:mint holder that holds it itself;
//   - for another subject, or for none, only by a relay:issue holder
//     granting read and write only: a booking system, minting for its
//     users. Everyone else mints for its own subject.
func (h *Handler) checkMint(minter *auth.Claims, req *tokenRequest) *apierr.Error {
	if minter.HasScope(auth.ScopeAdmin) {
		return nil
	}
	onlyConnection := true
	for _, s := range req.Scopes {
		if connectionScopes[s] {
			continue
		}
		onlyConnection = false
		if !minter.HasScope(auth.ScopeMint) || !minter.HasScope(s) {
			return apierr.New(http.StatusForbidden, "scope_forbidden",
				fmt.Sprintf("you may grant read, write and (with %s) the scopes you hold, not %q", auth.ScopeMint, s))
		}
	}
	if req.Topic != "" && h.cfg.Access != nil {
		if scope, within := h.cfg.Access.SystemScope(req.Topic); within && !minter.Allows(scope) {
			return apierr.New(http.StatusForbidden, "topic_forbidden",
				fmt.Sprintf("topic %s is the system's: granting it needs scope %s", req.Topic, scope))
		}
	}
	switch {
	case onlyConnection && minter.HasScope(auth.ScopeIssue):
		// An issuer names its users (or nobody).
	case req.Sub == "":
		req.Sub = minter.Subject
	case req.Sub != minter.Subject:
		return apierr.New(http.StatusForbidden, "subject_forbidden",
			fmt.Sprintf("you may mint tokens for your own subject only; another subject needs %s (or %s for read and write)", auth.ScopeAdmin, auth.ScopeIssue))
	}
	return nil
}

func (h *Handler) serveMintToken(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	var req tokenRequest
	if e := decodeJSON(w, r, &req); e != nil {
		apierr.Write(w, e)
		return
	}
	if req.Prefix == "" {
		req.Prefix = wire.PrefixSession
	}
	switch {
	case len(req.Scopes) == 0:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_scopes", "scopes is required")
		return
	case req.TTL <= 0:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_ttl", "ttl is required, e.g. \"1h\" or 3600")
		return
	case time.Duration(req.TTL) > h.cfg.MaxTokenTTL:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_ttl", fmt.Sprintf("ttl longer than the maximum %v", h.cfg.MaxTokenTTL))
		return
	case req.Prefix != wire.PrefixSession:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_prefix", "prefix must be "+wire.PrefixSession)
		return
	}
	if req.Topic != "" {
		if err := topic.ValidPattern(req.Topic); err != nil {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_topic", err.Error())
			return
		}
	} else if req.Scopes[0] == auth.ScopeRead || req.Scopes[0] == auth.ScopeWrite {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_topic", "topic is required for read and write")
		return
	}
	for _, v := range []struct{ name, val string }{{"booking_id", req.BookingID}, {"sub", req.Sub}} {
		if len(v.val) > maxRevocationValueLen {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_"+v.name, v.name+" too long")
			return
		}
	}
	if e := h.checkMint(c, &req); e != nil {
		apierr.Write(w, e)
		return
	}
	now := h.cfg.Now()
	claims := auth.NewClaims(h.cfg.Audience, now, time.Duration(req.TTL))
	claims.Topic, claims.Prefix, claims.Scopes, claims.BookingID, claims.Subject = req.Topic, req.Prefix, req.Scopes, req.BookingID, req.Sub
	claims.OrigIssuedAt = claims.IssuedAt
	h.issue(w, r, c, claims, "token.mint")
}

// issue audits and signs claims and answers with the token.
func (h *Handler) issue(w http.ResponseWriter, r *http.Request, actor *auth.Claims, claims auth.Claims, action string) {
	tok, err := h.cfg.Key.Sign(claims)
	if err != nil {
		h.cfg.Logger.Error("control: sign token", "err", err)
		apierr.WriteNew(w, http.StatusServiceUnavailable, "sign_failed", "could not sign the token")
		return
	}
	ev := store.AuditEvent{Time: claims.IssuedAt.Time, Actor: actor.Subject, Action: action, Target: "token:" + claims.ID,
		Detail: detailJSON(map[string]any{"topic": claims.Topic, "prefix": claims.Prefix, "scopes": claims.Scopes,
			"booking_id": claims.BookingID, "sub": claims.Subject, "expires_at": claims.ExpiresAt.UTC().Format(time.RFC3339)})}
	if err := h.timed("audit", func() error { _, err := h.cfg.Store.AppendAudit(r.Context(), ev); return err }); err != nil {
		h.storeError(w, "audit", err) // an unaudited token is never handed out
		return
	}
	apierr.WriteJSON(w, http.StatusOK, tokenResponse{Token: tok, ExpiresAt: claims.ExpiresAt.UTC()})
}

// serveRefresh exchanges a valid, unexpired, unrevoked token for one with
// the same claims and a new expiry: the token's own lifetime again, but never
// beyond MaxRefreshLifetime after the chain's original issue.
func (h *Handler) serveRefresh(w http.ResponseWriter, r *http.Request) {
	c, e := h.Authenticate(r)
	if e != nil {
		if e.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		apierr.Write(w, e)
		return
	}
	now := h.cfg.Now()
	switch {
	case c.IssuedAt == nil:
		apierr.WriteNew(w, http.StatusBadRequest, "token_not_refreshable", "token has no iat")
		return
	case c.BookingID != "":
		// A booking's tokens end with the booking: refreshing would let a
		// user outstay it.
		apierr.WriteNew(w, http.StatusForbidden, "token_not_refreshable", "tokens of a booking cannot be refreshed")
		return
	case c.HasScope(auth.ScopeLogin):
		// A login link signs in once: a refreshed copy (same jti, later
		// expiry) would outlive the record of its use.
		apierr.WriteNew(w, http.StatusForbidden, "token_not_refreshable", "a login link cannot be refreshed")
		return
	}
	orig := c.IssuedAt.Time
	if c.OrigIssuedAt != nil {
		orig = c.OrigIssuedAt.Time
	}
	limit := orig.Add(h.cfg.MaxRefreshLifetime)
	if !now.Before(limit) {
		apierr.WriteNew(w, http.StatusForbidden, "refresh_limit_reached", "token chain reached its maximum lifetime; sign in again")
		return
	}
	ttl := min(c.Expiry().Sub(c.IssuedAt.Time), h.cfg.MaxTokenTTL)
	exp := min(now.Add(ttl).Unix(), limit.Unix())
	next := *c
	next.IssuedAt = jwt.NewNumericDate(now)
	next.NotBefore = jwt.NewNumericDate(now)
	next.ExpiresAt = jwt.NewNumericDate(time.Unix(exp, 0))
	next.OrigIssuedAt = jwt.NewNumericDate(orig)
	h.issue(w, r, c, next, "token.refresh")
}
