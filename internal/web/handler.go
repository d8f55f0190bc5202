package web

import (
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Config configures the dashboard. Zero values mean the documented
// defaults.
type Config struct {
	// PublicURL is the server's public base URL (cookie Secure flag,
	// redirect URLs, token audience). Required.
	PublicURL *url.URL
	// Key signs the tokens the dashboard mints for its users (live-data
	// read tokens, per-request API tokens, /account/token/create) and the
	// login links. Required.
	Key *auth.Key
	// Verifier checks login-link tokens. Required.
	Verifier *auth.Verifier
	// Store keeps the sessions, records used login links (as token
	// revocations) and is read for the audit page through the API.
	// Required.
	Store store.Store
	// API serves the server's own API (/api/v1/…, /bids/…, /status);
	// /ui/api/ forwards there. Set by the server before serving.
	API http.Handler
	// Relay is read for the connection list and traffic history.
	Relay *relay.Server
	// CookieKey encrypts and authenticates the session cookie: 32 bytes.
	// Required.
	CookieKey []byte
	// SessionTTL is how long a login lasts (default 12 h).
	SessionTTL time.Duration
	// APITokenTTL is the lifetime of tokens from /account/token/create
	// (default 24 h).
	APITokenTTL time.Duration
	// Logger receives the dashboard's logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// OIDC, if set, offers login with an OpenID Connect provider.
	OIDC *OIDCConfig
	// GitHub, if set, offers login with GitHub (OAuth and its user API).
	GitHub *GitHubConfig
	// Revocations, if set, is asked on every request whether the session's
	// subject has been revoked; a revoked user's sessions end at once. If
	// it also has a method Add(store.Revocation) (control.Revocations
	// does), used login links are added to it as they are recorded.
	Revocations Denier
	// HTTPClient makes the requests to identity providers. Nil: a client
	// with a 15 s timeout.
	HTTPClient *http.Client

	// NodeID and Version describe this node on the Overview.
	NodeID, Version string
}

// Denier reports revocations (control.Revocations implements it).
type Denier interface {
	Denied(bookingID, subject, tokenID string) (kind string, denied bool)
}

// Handler serves the dashboard.
type Handler struct {
	cfg Config
	log *slog.Logger

	sessions *sessionStore
	sealer   *cookieSealer
	cop      *http.CrossOriginProtection
	secure   bool   // cookies are Secure: PublicURL is https
	base     string // PublicURL's path, "" or "/prefix": put before our paths in redirects
	pageCSP  string // the pages' Content-Security-Policy (pageCSP)
	authTmpl *template.Template
	oidc     *oidcProvider   // nil if not configured
	github   *githubProvider // nil if not configured

	linkMu    sync.Mutex           // serialises login-link redemption
	usedLinks map[string]time.Time // guarded by linkMu; jti → end of its record (linkUseRecordedUntil), links seen used

	ui uiState // the pages' state (history.go)
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.PublicURL == nil || cfg.Key == nil || cfg.Verifier == nil || cfg.Store == nil || len(cfg.CookieKey) != 32 {
		return nil, errors.New("web: PublicURL, Key, Verifier, Store and a 32-byte CookieKey are required")
	}
	if cfg.PublicURL.Scheme != "http" && cfg.PublicURL.Scheme != "https" || cfg.PublicURL.Host == "" {
		return nil, fmt.Errorf("web: public URL %q: want http(s)://host[:port][/path]", cfg.PublicURL)
	}
	switch {
	case cfg.SessionTTL < 0:
		return nil, fmt.Errorf("web: session TTL %v (--session-ttl): must not be negative; 0 means 12h", cfg.SessionTTL)
	case cfg.APITokenTTL < 0:
		return nil, fmt.Errorf("web: account token TTL %v (--account-token-ttl): must not be negative; 0 means 24h", cfg.APITokenTTL)
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.APITokenTTL == 0 {
		cfg.APITokenTTL = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	sealer, err := newCookieSealer(cfg.CookieKey)
	if err != nil {
		return nil, fmt.Errorf("web: cookie key: %w", err)
	}
	h := &Handler{
		cfg:       cfg,
		log:       cfg.Logger,
		sessions:  newSessionStore(cfg.Store, cfg.Now, cfg.Logger),
		sealer:    sealer,
		secure:    cfg.PublicURL.Scheme == "https",
		base:      strings.TrimSuffix(cfg.PublicURL.Path, "/"),
		pageCSP:   pageCSP(cfg.PublicURL),
		usedLinks: map[string]time.Time{},
	}
	if h.authTmpl, err = parseAuthTemplates(); err != nil {
		return nil, err
	}
	h.cop = http.NewCrossOriginProtection()
	if err := h.cop.AddTrustedOrigin(cfg.PublicURL.Scheme + "://" + cfg.PublicURL.Host); err != nil {
		return nil, fmt.Errorf("web: trusted origin: %w", err)
	}
	h.cop.SetDenyHandler(http.HandlerFunc(serveCrossOriginDenied))
	if cfg.OIDC != nil {
		if h.oidc, err = newOIDCProvider(h, *cfg.OIDC); err != nil {
			return nil, err
		}
	}
	if cfg.GitHub != nil {
		if h.github, err = newGitHubProvider(h, *cfg.GitHub); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Providers names the single sign-on providers configured: "oidc",
// "github". Empty: only login links let anyone in.
func (h *Handler) Providers() []string {
	var out []string
	if h.oidc != nil {
		out = append(out, "oidc")
	}
	if h.github != nil {
		out = append(out, "github")
	}
	return out
}

// Register adds the login, logout, account and login-link routes to mux,
// and the pages (registerPages, pages.go) under / and /ui/.
//
// The pages get a mux of their own, mounted on mux at "GET /{$}" and at
// "/ui/" for each method: their patterns then never conflict with the
// server's wildcard routes (the access endpoint's "POST /{prefix}/{topic...}"
// against a "/ui/api/{path...}"), and every request under /ui/ passes
// Protect (cross-origin protection) whatever the page's own wrapping.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /login", h.serveLogin)
	mux.Handle("POST /logout", h.Protect(http.HandlerFunc(h.serveLogout)))
	mux.HandleFunc("GET /auth/link", h.serveLink)
	if h.oidc != nil {
		mux.HandleFunc("GET /auth/oidc/login", h.oidc.serveLogin)
		mux.HandleFunc("GET /auth/oidc/callback", h.oidc.serveCallback)
	}
	if h.github != nil {
		mux.HandleFunc("GET /auth/github/login", h.github.serveLogin)
		mux.HandleFunc("GET /auth/github/callback", h.github.serveCallback)
	}
	mux.Handle("GET /account/token/create", h.Protect(h.RequireLogin(http.HandlerFunc(h.serveAccountToken))))

	pages := http.NewServeMux()
	h.registerPages(pages)
	mounted := h.Protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := pages.Handler(r); pattern == "" {
			apierr.WriteNew(w, http.StatusNotFound, wire.ErrorNotFound, "no such page")
			return
		}
		pages.ServeHTTP(w, r)
	}))
	mux.Handle("GET /{$}", mounted)
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		mux.Handle(m+" /ui/", mounted)
	}
	// Browsers ask for /favicon.ico whatever the page says (e.g. on a raw
	// JSON answer); without this the access endpoint's wildcard answers.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, h.path("/ui/static/icon.svg"), http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, h.path("/ui/"), http.StatusMovedPermanently)
	})
}

// path returns p (an absolute path of ours) under the public URL's path.
func (h *Handler) path(p string) string { return h.base + p }
