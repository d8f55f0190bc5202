package web

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Login links: a one-time admin login for whoever holds the server's
// secret (printed by `serve` when no provider is configured, and by
// `switchboard login-link`). A link is a token signed with the server's
// key, for the server's public URL, with subject LinkSubject and the single
// scope auth.ScopeLogin, which the API ignores and the refresh endpoint
// refuses: it lets its holder sign in once, nothing else.
const (
	// LoginLinkTTL is how long a login link is valid.
	LoginLinkTTL = 15 * time.Minute
	// LinkSubject is the subject of login links and of their sessions.
	LinkSubject = "link:admin"
)

// NewLoginLink returns a fresh one-time admin login link for the server at
// publicURL (its base URL, the token audience), signed with key, and when
// it expires.
func NewLoginLink(key *auth.Key, publicURL string, now time.Time) (string, time.Time, error) {
	publicURL = strings.TrimSuffix(publicURL, "/")
	c := auth.NewClaims(publicURL, now, LoginLinkTTL)
	c.Subject, c.Scopes = LinkSubject, []string{auth.ScopeLogin}
	tok, err := key.Sign(c)
	if err != nil {
		return "", time.Time{}, err
	}
	return publicURL + "/auth/link?t=" + tok, c.ExpiresAt.Time, nil
}

// LoginLink returns a fresh one-time admin login link for this server.
func (h *Handler) LoginLink() (string, time.Time, error) {
	return NewLoginLink(h.cfg.Key, h.cfg.PublicURL.String(), h.cfg.Now())
}

// serveLink redeems a login link: a valid, unexpired, unused link gives an
// admin session. Its token id is recorded as a token revocation (with an
// audit event) before the session is created, so a link works once, even
// across restarts.
func (h *Handler) serveLink(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Referrer-Policy", "no-referrer")
	if r.Method == http.MethodHead {
		// Link checkers probe with HEAD: that must not use the link up.
		w.Header().Set("Cache-Control", "no-store")
		return
	}
	t := r.URL.Query().Get("t")
	if t == "" {
		h.renderAuthError(w, http.StatusBadRequest, "Login link invalid", "This login link carries no token. Print a fresh one with `switchboard login-link`.")
		return
	}
	c, err := h.cfg.Verifier.Verify(t)
	if err != nil {
		msg := "This login link is not valid for this server. Print a fresh one with `switchboard login-link`."
		var ae *auth.Error
		if errors.As(err, &ae) && ae.Code == auth.CodeExpired {
			msg = "This login link has expired (links are valid for 15 minutes). Print a fresh one with `switchboard login-link`."
		}
		h.renderAuthError(w, http.StatusBadRequest, "Login link invalid", msg)
		return
	}
	// A link has no prefix and no topic: the token API always sets the
	// prefix, so holders of relay:admin cannot mint themselves a login.
	// Nor is it part of a refresh chain (orig_iat): a refreshed copy has
	// the link's jti and a later expiry, so it would outlive the record of
	// the link's use (servers before issue 12 refreshed links).
	if c.Subject != LinkSubject || len(c.Scopes) != 1 || !c.HasScope(auth.ScopeLogin) || c.ID == "" ||
		c.Prefix != "" || c.Topic != "" || c.BookingID != "" || c.Agent != "" || c.OrigIssuedAt != nil ||
		c.IssuedAt == nil || c.Expiry().Sub(c.IssuedAt.Time) > LoginLinkTTL+time.Minute {
		h.renderAuthError(w, http.StatusBadRequest, "Login link invalid", "This token is not a login link.")
		return
	}
	used, err := h.redeemLink(r.Context(), c)
	switch {
	case used:
		h.log.Info("web: login link refused: already used", "jti", c.ID)
		h.renderAuthError(w, http.StatusForbidden, "Login link already used", "This login link has already been used; each link signs in once. Print a fresh one with `switchboard login-link`.")
		return
	case err != nil:
		if errors.Is(err, context.Canceled) {
			return
		}
		h.log.Error("web: login link: could not record its use", "err", err)
		h.renderAuthError(w, http.StatusServiceUnavailable, "Database unavailable", "The link's use could not be recorded, so it was not accepted (it is still valid). Try again in a moment.")
		return
	}
	h.startSession(w, r, identity{Subject: LinkSubject, Name: "admin (login link)", Provider: "link", Role: RoleAdmin}, defaultNext)
}

// revocationAdder is implemented by control.Revocations: the server's
// in-memory set of revocations.
type revocationAdder interface {
	Add(store.Revocation)
}

// linkUseRecordedUntil is how long the use of the link c is remembered:
// its whole life, that is until the verifier refuses it as expired (its
// expiry plus the verifier's leeway), and a minute more.
func (h *Handler) linkUseRecordedUntil(c *auth.Claims) time.Time {
	return c.Expiry().Add(h.cfg.Verifier.Leeway() + time.Minute)
}

// redeemLink marks the link's token id used. It reports used if it already
// was (by this process, or recorded in the store by any process).
func (h *Handler) redeemLink(ctx context.Context, c *auth.Claims) (used bool, err error) {
	if h.cfg.Revocations != nil {
		if _, denied := h.cfg.Revocations.Denied("", "", c.ID); denied {
			return true, nil
		}
	}
	h.linkMu.Lock()
	defer h.linkMu.Unlock()
	now := h.cfg.Now()
	for id, until := range h.usedLinks {
		if now.After(until) {
			delete(h.usedLinks, id)
		}
	}
	until := h.linkUseRecordedUntil(c)
	if _, ok := h.usedLinks[c.ID]; ok {
		return true, nil
	}
	revs, err := h.cfg.Store.Revocations(ctx, store.RevokeToken, now)
	if err != nil {
		return false, err
	}
	for _, rv := range revs {
		if rv.Value == c.ID {
			h.usedLinks[c.ID] = until
			return true, nil
		}
	}
	// The revocation outlives the token by the verifier's leeway, so the
	// link cannot be replayed in the window the leeway leaves open.
	rv := store.Revocation{Kind: store.RevokeToken, Value: c.ID, Reason: "login link used", Actor: LinkSubject, CreatedAt: now, ExpiresAt: until}
	ev := store.AuditEvent{Time: now, Actor: LinkSubject, Action: "login.link", Target: "token:" + c.ID, Reason: "login link used",
		Detail: authDetailJSON(map[string]any{"expires_at": until.UTC().Format(time.RFC3339)})}
	if _, err := h.cfg.Store.Revoke(ctx, rv, ev); err != nil {
		return false, err
	}
	h.usedLinks[c.ID] = until
	if a, ok := h.cfg.Revocations.(revocationAdder); ok {
		a.Add(rv) // listed by the API at once, not only after a restart
	}
	return false, nil
}
