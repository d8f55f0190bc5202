package web

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDCConfig configures login with an OpenID Connect provider (Keycloak,
// Dex, Google, Authentik, …).
type OIDCConfig struct {
	// Issuer is the provider's issuer URL; its discovery document is at
	// Issuer + "/.well-known/openid-configuration". Required.
	Issuer string
	// ClientID and ClientSecret are the dashboard's client registration at
	// the provider. ClientID is required; an empty secret means a public
	// client (PKCE only).
	ClientID, ClientSecret string
	// RedirectURL is the callback registered at the provider (default
	// PublicURL + "/auth/oidc/callback").
	RedirectURL string
	// Scopes are requested besides openid, profile and email (e.g.
	// "groups" for Dex).
	Scopes []string
	// RolesClaim names the ID token claim listing the user's groups
	// (default "groups"): a list of strings or a single string. A dotted
	// path reaches into objects ("realm_access.roles" for Keycloak) when
	// no claim has the dotted name itself. When the ID token lacks the
	// claim, the userinfo endpoint is asked.
	RolesClaim string
	// AdminGroups, OperatorGroups and ViewerGroups map groups to roles; a
	// user in several gets the highest.
	AdminGroups, OperatorGroups, ViewerGroups []string
	// DefaultRole is the role of a user in none of those groups (default
	// RoleNone: not let in). Setting it requires an allowlist, since
	// otherwise everyone with an account at the provider would get in.
	DefaultRole Role
	// AllowSubjects and AllowEmails, if either is set, are the only users
	// let in: their "sub" claim, or their e-mail, compared without case
	// and only if the provider says it is verified (email_verified true;
	// allow users of providers that do not say so by subject).
	AllowSubjects, AllowEmails []string
	// Name is shown on the login button (default: the issuer's host).
	Name string
}

// oidcProvider is login with OpenID Connect. Discovery happens at the first
// login, and again at the next login after a failure, so the server starts
// and relays while the provider is down.
type oidcProvider struct {
	h           *Handler
	cfg         OIDCConfig
	name        string
	redirectURL string
	scopes      []string

	mu       sync.Mutex            // held during discovery: one discovery at a time
	provider *oidc.Provider        // guarded by mu; nil until discovery succeeds
	verifier *oidc.IDTokenVerifier // guarded by mu
	failedAt time.Time             // guarded by mu; last failed discovery
	failure  error                 // guarded by mu
}

// discoveryRetryAfter is how long a failed discovery is remembered: logins
// in that window fail at once instead of each waiting for the provider.
const discoveryRetryAfter = 5 * time.Second

// discoveryTimeout bounds one discovery request.
const discoveryTimeout = 10 * time.Second

func newOIDCProvider(h *Handler, cfg OIDCConfig) (*oidcProvider, error) {
	iu, err := url.Parse(cfg.Issuer)
	if err != nil || (iu.Scheme != "https" && iu.Scheme != "http") || iu.Host == "" {
		return nil, fmt.Errorf("web: OIDC issuer %q: want an http(s) URL", cfg.Issuer)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("web: OIDC needs a client id")
	}
	if cfg.RolesClaim == "" {
		cfg.RolesClaim = "groups"
	}
	if len(cfg.AdminGroups)+len(cfg.OperatorGroups)+len(cfg.ViewerGroups) == 0 && cfg.DefaultRole == RoleNone {
		return nil, errors.New("web: OIDC: no way to get a role: give admin, operator or viewer groups (or a default role with an allowlist)")
	}
	if cfg.DefaultRole != RoleNone && len(cfg.AllowSubjects)+len(cfg.AllowEmails) == 0 {
		return nil, errors.New("web: OIDC: a default role needs an allowlist of subjects or e-mails, else every account at the provider gets it")
	}
	p := &oidcProvider{h: h, cfg: cfg, name: cfg.Name, redirectURL: cfg.RedirectURL}
	if p.name == "" {
		p.name = iu.Host
	}
	if p.redirectURL == "" {
		p.redirectURL = strings.TrimSuffix(h.cfg.PublicURL.String(), "/") + "/auth/oidc/callback"
	}
	p.scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	for _, s := range cfg.Scopes {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(p.scopes, s) {
			p.scopes = append(p.scopes, s)
		}
	}
	return p, nil
}

// clientContext returns ctx carrying the HTTP client for the provider.
func (p *oidcProvider) clientContext(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, p.h.cfg.HTTPClient)
}

// discover returns the provider's configuration, fetching it if need be.
func (p *oidcProvider) discover(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.provider != nil {
		return p.provider, p.verifier, nil
	}
	if p.failure != nil && p.h.cfg.Now().Sub(p.failedAt) < discoveryRetryAfter {
		return nil, nil, p.failure
	}
	// Not cancelled with the request: a user who gives up must not make
	// the next users' logins fail with "context canceled".
	dctx, cancel := context.WithTimeout(p.clientContext(context.WithoutCancel(ctx)), discoveryTimeout)
	defer cancel()
	prov, err := oidc.NewProvider(dctx, p.cfg.Issuer)
	if err != nil {
		p.failure, p.failedAt = err, p.h.cfg.Now()
		p.h.log.Warn("web: OIDC discovery failed; retrying at the next login", "issuer", p.cfg.Issuer, "err", err)
		return nil, nil, err
	}
	p.provider, p.failure = prov, nil
	p.verifier = prov.Verifier(&oidc.Config{ClientID: p.cfg.ClientID, Now: p.h.cfg.Now})
	p.h.log.Info("web: OIDC provider discovered", "issuer", p.cfg.Issuer)
	return p.provider, p.verifier, nil
}

func (p *oidcProvider) oauth2Config(prov *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{
		ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret,
		Endpoint: prov.Endpoint(), RedirectURL: p.redirectURL, Scopes: p.scopes,
	}
}

// serveLogin sends the browser to the provider with a fresh state, nonce
// and PKCE challenge.
func (p *oidcProvider) serveLogin(w http.ResponseWriter, r *http.Request) {
	prov, _, err := p.discover(r.Context())
	if err != nil {
		p.h.renderAuthError(w, http.StatusBadGateway, "Identity provider unreachable",
			fmt.Sprintf("The identity provider %s could not be reached (%s). Try again in a moment; if it persists, tell the server's operators.", p.name, shortError(err)))
		return
	}
	ls := p.h.beginLogin(w, "oidc", r.URL.Query().Get("next"))
	target := p.oauth2Config(prov).AuthCodeURL(ls.State, oidc.Nonce(ls.Nonce), oauth2.S256ChallengeOption(ls.Verifier))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// serveCallback finishes a login: it checks state, exchanges the code
// (with the PKCE verifier), verifies the ID token and its nonce, and lets
// the user in if the allowlists and group mapping give them a role.
func (p *oidcProvider) serveCallback(w http.ResponseWriter, r *http.Request) {
	h := p.h
	ls, code, ok := h.beginCallback(w, r, "oidc", "The identity provider")
	if !ok {
		return
	}
	prov, verifier, err := p.discover(r.Context())
	if err != nil {
		h.renderAuthError(w, http.StatusBadGateway, "Identity provider unreachable",
			fmt.Sprintf("The identity provider %s could not be reached (%s). Try again in a moment.", p.name, shortError(err)))
		return
	}
	ctx, cancel := context.WithTimeout(p.clientContext(r.Context()), 30*time.Second)
	defer cancel()
	tok, err := p.oauth2Config(prov).Exchange(ctx, code, oauth2.VerifierOption(ls.Verifier))
	if err != nil {
		status, msg := exchangeFailure(err)
		h.log.Warn("web: OIDC code exchange failed", "err", err)
		h.renderAuthError(w, status, "Login failed", msg)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		h.renderAuthError(w, http.StatusBadGateway, "Login failed", "The identity provider answered without an ID token.")
		return
	}
	idt, err := verifier.Verify(ctx, raw)
	if err != nil {
		h.log.Warn("web: OIDC ID token refused", "err", err)
		if isNetworkError(err) {
			h.renderAuthError(w, http.StatusBadGateway, "Identity provider unreachable", "The identity provider's signing keys could not be fetched. Try again in a moment.")
			return
		}
		h.renderAuthError(w, http.StatusBadRequest, "Login refused", "Login refused: the ID token is not valid ("+shortError(err)+").")
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(ls.Nonce)) != 1 {
		h.log.Warn("web: OIDC ID token nonce mismatch", "sub", idt.Subject)
		h.renderAuthError(w, http.StatusBadRequest, "Login refused", "Login refused: the ID token's nonce does not match the login started from this browser. Please sign in again.")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		h.renderAuthError(w, http.StatusBadGateway, "Login failed", "The ID token's claims could not be read.")
		return
	}
	groups, found := claimStrings(claims, p.cfg.RolesClaim)
	if !found {
		if ui, err := prov.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil && ui.Subject == idt.Subject {
			var uc map[string]any
			if ui.Claims(&uc) == nil {
				groups, _ = claimStrings(uc, p.cfg.RolesClaim)
			}
		}
	}
	email, _ := claims["email"].(string)
	verifiedEmail := ""
	if v, _ := claims["email_verified"].(bool); v {
		verifiedEmail = email // an address the provider has not verified proves nothing
	}
	id := identity{Subject: "oidc:" + idt.Subject, Email: email, Provider: "oidc"}
	for _, k := range []string{"name", "preferred_username", "email"} {
		if s, _ := claims[k].(string); s != "" {
			id.Name = s
			break
		}
	}
	if reason := p.decide(idt.Subject, verifiedEmail, groups, &id); reason != "" {
		h.log.Info("web: OIDC login denied", "sub", idt.Subject, "reason", reason)
		h.renderDenied(w, r, reason, nil)
		return
	}
	h.startSession(w, r, id, ls.Next)
}

// decide applies the allowlists and the group mapping. It sets id.Role,
// or returns why the user is not let in.
func (p *oidcProvider) decide(sub, email string, groups []string, id *identity) string {
	if len(p.cfg.AllowSubjects)+len(p.cfg.AllowEmails) > 0 {
		ok := slices.Contains(p.cfg.AllowSubjects, sub) ||
			(email != "" && slices.ContainsFunc(p.cfg.AllowEmails, func(e string) bool { return strings.EqualFold(e, email) }))
		if !ok {
			who := "subject " + sub
			if email != "" {
				who = email
			}
			return fmt.Sprintf("Your account (%s) is not on this server's allowlist.", who)
		}
	}
	role := RoleNone
	for _, m := range []struct {
		r      Role
		groups []string
	}{{RoleAdmin, p.cfg.AdminGroups}, {RoleOperator, p.cfg.OperatorGroups}, {RoleViewer, p.cfg.ViewerGroups}} {
		if role == RoleNone && slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(m.groups, g) }) {
			role = m.r
		}
	}
	if role == RoleNone {
		role = p.cfg.DefaultRole
	}
	if role == RoleNone {
		return fmt.Sprintf("You signed in, but your %q claim names none of the groups that give a role on this server (admin, operator or viewer).", p.cfg.RolesClaim)
	}
	id.Role = role
	return ""
}

// claimStrings reads a claim that is a list of strings or one string. A
// name not found as is, and containing dots, is followed as a path into
// nested objects. found reports whether the claim exists.
func claimStrings(claims map[string]any, name string) (vals []string, found bool) {
	v, ok := claims[name]
	if !ok && strings.Contains(name, ".") {
		var cur any = claims
		for _, part := range strings.Split(name, ".") {
			m, isMap := cur.(map[string]any)
			if !isMap {
				return nil, false
			}
			if cur, ok = m[part]; !ok {
				return nil, false
			}
		}
		v = cur
	}
	if !ok {
		return nil, false
	}
	switch v := v.(type) {
	case string:
		return []string{v}, true
	case []any:
		for _, e := range v {
			if s, isStr := e.(string); isStr {
				vals = append(vals, s)
			}
		}
		return vals, true
	}
	return nil, true
}

// exchangeFailure maps a failed code exchange to a status and message:
// the provider refusing the code is a bad callback (400); not reaching it,
// or it failing, is a bad gateway (502).
func exchangeFailure(err error) (int, string) {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
		msg := "The identity provider refused the login code"
		if re.ErrorCode != "" {
			msg += " (" + truncateMsg(re.ErrorCode, 64) + ")"
		}
		return http.StatusBadRequest, msg + ". Please sign in again."
	}
	return http.StatusBadGateway, "The identity provider could not be reached to complete the login (" + shortError(err) + "). Try again in a moment."
}

func isNetworkError(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue)
}

// shortError is an error's message cut to a length fit for a page. The
// errors shown come from talking to a provider and hold no secrets.
func shortError(err error) string {
	return truncateMsg(err.Error(), 160)
}

func truncateMsg(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
