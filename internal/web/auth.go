package web

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/store"
)

//go:embed templates/login.html templates/denied.html templates/error.html
var authTemplateFiles embed.FS

func parseAuthTemplates() (*template.Template, error) {
	t, err := template.ParseFS(authTemplateFiles, "templates/login.html", "templates/denied.html", "templates/error.html")
	if err != nil {
		return nil, fmt.Errorf("web: auth templates: %w", err)
	}
	return t, nil
}

// defaultNext is where a login lands when no (acceptable) target was given.
const defaultNext = "/ui/"

// wantsJSONError reports whether the answer to r is JSON rather than a page:
// for the dashboard's API (/ui/api/…) and any request that is not a page
// load (not GET or HEAD).
func wantsJSONError(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/ui/api/") || (r.Method != http.MethodGet && r.Method != http.MethodHead)
}

// RequireLogin lets requests with a live session through, with the
// *Session in their context (SessionFrom). Without one (no cookie, expired,
// logged out, undecryptable, or the user's subject revoked) a page load
// (GET or HEAD, outside /ui/api/) is redirected (303) to
// /login?next=<the page>, and anything else gets a JSON 401
// login_required.
func (h *Handler) RequireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, present, err := h.sessionOf(r)
		if err != nil {
			h.serveSessionStoreError(w, r, err)
			return
		}
		if s == nil {
			if present {
				h.clearCookie(w, SessionCookie, "/")
			}
			if wantsJSONError(r) {
				apierr.WriteNew(w, http.StatusUnauthorized, "login_required", "sign in first: no valid dashboard session (it may have expired or been logged out)")
				return
			}
			target := r.URL.EscapedPath()
			if r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, h.loginURL(target), http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithSession(r.Context(), s)))
	})
}

// RequireRole lets requests of users with role at least role through. It
// includes RequireLogin: a request without a session is treated as
// RequireLogin treats it. A user whose role is too low gets a 403: the
// denied page for page loads, JSON role_forbidden otherwise; both say which
// role is needed.
func (h *Handler) RequireRole(role Role, next http.Handler) http.Handler {
	check := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := SessionFrom(r.Context())
		if s.Role >= role {
			next.ServeHTTP(w, r)
			return
		}
		msg := fmt.Sprintf("this needs the %s role; you have the %s role", role, s.Role)
		if wantsJSONError(r) {
			apierr.WriteNew(w, http.StatusForbidden, "role_forbidden", msg)
			return
		}
		h.renderDenied(w, r, msg, s)
	})
	login := h.RequireLogin(check)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if SessionFrom(r.Context()) == nil {
			login.ServeHTTP(w, r)
			return
		}
		check.ServeHTTP(w, r)
	})
}

// Protect refuses cross-origin state-changing requests (anything but GET,
// HEAD and OPTIONS) from browsers, with http.CrossOriginProtection: the
// browser's Sec-Fetch-Site header, or else its Origin header, must show the
// request comes from the dashboard's own origin (PublicURL's). Refused
// requests get a JSON 403 cross_origin_forbidden. Requests without either
// header (scripts, not browsers) pass: they cannot carry a victim's
// cookie.
func (h *Handler) Protect(next http.Handler) http.Handler {
	return h.cop.Handler(next)
}

func serveCrossOriginDenied(w http.ResponseWriter, r *http.Request) {
	apierr.WriteNew(w, http.StatusForbidden, "cross_origin_forbidden",
		"cross-origin request refused: state-changing dashboard requests must come from the dashboard's own pages")
}

// loginURL returns the login page's URL that leads on to target.
func (h *Handler) loginURL(target string) string {
	u := h.path("/login")
	if t := safeNext(target); t != "" {
		u += "?next=" + url.QueryEscape(t)
	}
	return u
}

// safeNext returns target if it is a same-site path to go to after login
// ("/ui/jobs?state=running"), else "". Absolute URLs, scheme-relative
// ("//evil.example") and backslash tricks are refused, as are the login
// routes themselves.
func safeNext(target string) string {
	if target == "" || len(target) > 2048 || target[0] != '/' {
		return ""
	}
	if strings.HasPrefix(target, "//") || strings.HasPrefix(target, "/\\") ||
		strings.ContainsFunc(target, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return ""
	}
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return ""
	}
	p := u.Path
	if p == "/login" || p == "/logout" || strings.HasPrefix(p, "/auth/") {
		return ""
	}
	return target
}

// nextOrDefault returns the acceptable target or the dashboard's home.
func nextOrDefault(target string) string {
	if t := safeNext(target); t != "" {
		return t
	}
	return defaultNext
}

// providerLink is a button on the login page.
type providerLink struct {
	ID, Name, URL string
}

// serveLogin shows the login page: a button per provider. A user who is
// already signed in goes straight on to next.
func (h *Handler) serveLogin(w http.ResponseWriter, r *http.Request) {
	next := nextOrDefault(r.URL.Query().Get("next"))
	if s, _, _ := h.sessionOf(r); s != nil { // a store error: show the login page
		http.Redirect(w, r, h.path(next), http.StatusSeeOther)
		return
	}
	q := "?next=" + url.QueryEscape(next)
	var links []providerLink
	if h.oidc != nil {
		links = append(links, providerLink{ID: "oidc", Name: h.oidc.name, URL: h.path("/auth/oidc/login") + q})
	}
	if h.github != nil {
		links = append(links, providerLink{ID: "github", Name: "GitHub", URL: h.path("/auth/github/login") + q})
	}
	h.renderAuth(w, http.StatusOK, "login.html", map[string]any{"Base": h.base, "Providers": links})
}

// serveLogout ends the session on the server (a copy of the cookie stops
// working, on every node) and in the browser, then shows the login page.
// If the store cannot delete the session, the answer is 503 and the
// cookie is kept, so that the user can retry the logout.
func (h *Handler) serveLogout(w http.ResponseWriter, r *http.Request) {
	if id, _ := h.sessionIDOf(r); id != "" {
		s, err := h.sessions.Get(r.Context(), id) // for the log only
		if err == nil {
			err = h.sessions.Delete(r.Context(), id)
		}
		if err != nil {
			h.serveSessionStoreError(w, r, err)
			return
		}
		if s != nil {
			h.log.Info("web: logout", "subject", s.Subject)
		}
	}
	h.clearCookie(w, SessionCookie, "/")
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, h.path("/login"), http.StatusSeeOther)
}

// renderAuth executes one of the auth templates. Pages are rendered to a
// buffer first, so a template error never sends half a page.
func (h *Handler) renderAuth(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := h.authTmpl.ExecuteTemplate(&buf, name, data); err != nil {
		h.log.Error("web: render", "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
	hd.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// renderAuthError shows the error page: what went wrong and a link back to
// the login page.
func (h *Handler) renderAuthError(w http.ResponseWriter, status int, title, msg string) {
	h.renderAuth(w, status, "error.html", map[string]any{
		"Base": h.base, "Status": status, "Title": title, "Message": msg, "Retry": h.path("/login"),
	})
}

// renderDenied shows the 403 page with the reason. s is the signed-in user,
// or nil when the login itself was refused.
func (h *Handler) renderDenied(w http.ResponseWriter, r *http.Request, msg string, s *Session) {
	data := map[string]any{"Base": h.base, "Message": msg}
	if s != nil {
		who := s.Name
		if who == "" {
			who = s.Subject
		}
		data["Who"] = who
		data["Home"] = h.path(defaultNext)
	}
	h.renderAuth(w, http.StatusForbidden, "denied.html", data)
}

// identity is who a provider says logged in, before a session exists.
type identity struct {
	Subject, Name, Email, Provider string
	Role                           Role
}

// startSession creates the session of a user the provider has let in,
// records the login in the audit log (best effort: a login is not refused
// because the log is unavailable), sets the cookie and sends the browser
// on to next.
func (h *Handler) startSession(w http.ResponseWriter, r *http.Request, id identity, next string) {
	if old, _ := h.sessionIDOf(r); old != "" {
		// One browser, one session. Best effort: the old cookie is
		// replaced below, and the old session expires anyway.
		if err := h.sessions.Delete(r.Context(), old); err != nil {
			h.log.Warn("web: could not delete the session a new login replaces", "err", err)
		}
	}
	if h.subjectRevoked(id.Subject) {
		// No session is made for a revoked user: it would outlive the
		// revocation's enforcement (CloseWhere) that already ran.
		h.log.Info("web: login refused: the subject is revoked", "subject", id.Subject, "provider", id.Provider)
		h.renderDenied(w, r, "Your access to this server has been revoked.", nil)
		return
	}
	s, err := h.sessions.Create(r.Context(), Session{Subject: id.Subject, Name: id.Name, Email: id.Email, Provider: id.Provider, Role: id.Role}, h.cfg.SessionTTL)
	if err != nil {
		h.serveSessionStoreError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	ev := store.AuditEvent{Time: s.Created, Actor: s.Subject, Action: "login", Target: "session",
		Detail: authDetailJSON(map[string]any{"provider": s.Provider, "role": s.Role.String()})}
	if _, err := h.cfg.Store.AppendAudit(ctx, ev); err != nil {
		h.log.Warn("web: could not record a login in the audit log", "subject", s.Subject, "err", err)
	}
	h.log.Info("web: login", "subject", s.Subject, "provider", s.Provider, "role", s.Role.String())
	h.setSessionCookie(w, s)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, h.path(nextOrDefault(next)), http.StatusSeeOther)
}

func authDetailJSON(v map[string]any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// accountToken is the answer of /account/token/create.
type accountToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Scopes    []string  `json:"scopes"`
}

// serveAccountToken mints an API token for the signed-in user's own
// programmatic use: their subject, their role's scopes, APITokenTTL, and an
// original issue time so /api/v1/account/token/refresh can refresh it.
// Like the token API it is audited before it is handed out.
func (h *Handler) serveAccountToken(w http.ResponseWriter, r *http.Request) {
	s := SessionFrom(r.Context())
	scopes := s.Role.Scopes()
	if len(scopes) == 0 {
		apierr.WriteNew(w, http.StatusForbidden, "role_forbidden", "your role grants no API scopes")
		return
	}
	now := h.cfg.Now()
	c := auth.NewClaims(h.cfg.PublicURL.String(), now, h.cfg.APITokenTTL)
	c.Subject, c.Scopes, c.OrigIssuedAt = s.Subject, scopes, c.IssuedAt
	tok, err := h.cfg.Key.Sign(c)
	if err != nil {
		h.log.Error("web: sign account token", "err", err)
		apierr.WriteNew(w, http.StatusServiceUnavailable, "sign_failed", "could not sign the token")
		return
	}
	ev := store.AuditEvent{Time: now, Actor: s.Subject, Action: "token.create", Target: "token:" + c.ID,
		Detail: authDetailJSON(map[string]any{"sub": s.Subject, "scopes": scopes, "expires_at": c.ExpiresAt.UTC().Format(time.RFC3339), "via": "dashboard"})}
	if _, err := h.cfg.Store.AppendAudit(r.Context(), ev); err != nil {
		if errors.Is(err, context.Canceled) {
			return
		}
		h.log.Error("web: audit account token", "err", err)
		apierr.WriteNew(w, http.StatusServiceUnavailable, "store_unavailable", "the database is unavailable; no token was issued, retry later")
		return
	}
	apierr.WriteJSON(w, http.StatusOK, accountToken{Token: tok, ExpiresAt: c.ExpiresAt.UTC(), Scopes: scopes})
}
