// Package access is the relay's HTTP front: the access endpoint that trades a
// token for a one-time code, and the websocket endpoint that trades the code
// for a relay connection.
//
//	POST /{prefix}/{topic...}           Authorization: Bearer <jwt>  → 200 {"uri": "ws(s)://…?code=CODE"}
//	GET  /{prefix}/{topic...}?code=CODE (websocket upgrade)          → relay connection
//
// Every refusal is a JSON error (see internal/apierr) with the right status,
// given before any websocket upgrade. Tokens and codes are never logged.
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"switchboard/internal/apierr"
	"switchboard/internal/auth"
	"switchboard/internal/relay"
	"switchboard/internal/topic"
	"switchboard/internal/wsconn"
)

// PrefixSession is the connection type for shared topics.
const PrefixSession = "session"

// DefaultCodeTTL is how long a one-time code stays valid.
const DefaultCodeTTL = 30 * time.Second

// Config configures a Handler.
type Config struct {
	// PublicURL is the server's public base URL (http or https). It is the
	// token audience, and the websocket URIs handed out are built from it
	// (ws or wss accordingly).
	PublicURL *url.URL
	// NodeID names this node in codes.
	NodeID string
	// Verifier checks tokens.
	Verifier *auth.Verifier
	// Relay receives accepted connections.
	Relay *relay.Server
	// Codes stores pending codes; nil means a MemoryCodeStore.
	Codes CodeStore
	// CodeTTL is the validity of a code; 0 means DefaultCodeTTL.
	CodeTTL time.Duration
	// AllowedOrigins are the browser origins (scheme://host[:port]) allowed
	// to call the access endpoint (CORS) and open websockets, besides the
	// server's own origin. "*" allows any origin.
	AllowedOrigins []string
	// Logger receives request-level events; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Handler serves the access and websocket endpoints.
type Handler struct {
	cfg        Config
	wsBase     string // ws(s)://host/path-prefix of handed-out URIs
	selfOrigin string
	origins    map[string]bool
	anyOrigin  bool
	maxMessage int
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.PublicURL == nil || cfg.Verifier == nil || cfg.Relay == nil {
		return nil, errors.New("access: PublicURL, Verifier and Relay are required")
	}
	if !ValidNodeID(cfg.NodeID) {
		return nil, fmt.Errorf("access: node id %q: want 1-32 characters of a-z 0-9 -", cfg.NodeID)
	}
	if cfg.Codes == nil {
		cfg.Codes = NewMemoryCodeStore(0, cfg.Now)
	}
	if cfg.CodeTTL <= 0 {
		cfg.CodeTTL = DefaultCodeTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ws := *cfg.PublicURL
	switch ws.Scheme {
	case "http":
		ws.Scheme = "ws"
	case "https":
		ws.Scheme = "wss"
	default:
		return nil, fmt.Errorf("access: public URL scheme %q: want http or https", ws.Scheme)
	}
	h := &Handler{
		cfg:        cfg,
		wsBase:     strings.TrimSuffix(ws.String(), "/"),
		selfOrigin: cfg.PublicURL.Scheme + "://" + cfg.PublicURL.Host,
		origins:    make(map[string]bool),
		maxMessage: cfg.Relay.Config().MaxMessageBytes,
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			h.anyOrigin = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("access: allowed origin %q: want scheme://host[:port]", o)
		}
		h.origins[u.Scheme+"://"+u.Host] = true
	}
	return h, nil
}

// Register adds the handler's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /{prefix}/{topic...}", h.serveAccess)
	mux.HandleFunc("OPTIONS /{prefix}/{topic...}", h.servePreflight)
	mux.HandleFunc("GET /{prefix}/{topic...}", h.serveWebsocket)
}

// knownPrefix reports whether prefix names a connection type this node serves.
func knownPrefix(prefix string) bool { return prefix == PrefixSession }

// target checks the prefix and topic of a request path.
func target(r *http.Request) (prefix, name string, err *apierr.Error) {
	prefix, name = r.PathValue("prefix"), r.PathValue("topic")
	if !knownPrefix(prefix) {
		return "", "", apierr.New(http.StatusNotFound, "unknown_prefix", fmt.Sprintf("no connection type %q here (known: %s)", truncate(prefix, 32), PrefixSession))
	}
	if e := topic.Valid(name); e != nil {
		return "", "", apierr.New(http.StatusBadRequest, "invalid_topic", e.Error())
	}
	return prefix, name, nil
}

// originAllowed reports whether a request's Origin may use the relay. A
// request without Origin is not from a browser and is allowed.
func (h *Handler) originAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || h.anyOrigin || h.origins[o] || o == h.selfOrigin {
		return true
	}
	// Same origin as the request's own Host (e.g. behind a proxy that keeps Host).
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

func (h *Handler) setCORS(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("Vary", "Origin")
	if o := r.Header.Get("Origin"); o != "" {
		w.Header().Set("Access-Control-Allow-Origin", o)
	}
}

func (h *Handler) servePreflight(w http.ResponseWriter, r *http.Request) {
	if _, _, e := target(r); e != nil {
		apierr.Write(w, e)
		return
	}
	if r.Header.Get("Origin") == "" || !h.originAllowed(r) {
		apierr.WriteNew(w, http.StatusForbidden, "origin_forbidden", "origin not allowed")
		return
	}
	h.setCORS(w, r)
	w.Header().Set("Access-Control-Allow-Methods", "POST")
	w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	w.Header().Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// bearer extracts the token from the Authorization header, accepting
// "Bearer <jwt>" and the bare "<jwt>" that practable clients send.
func bearer(r *http.Request) (string, *apierr.Error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 || vals[0] == "" {
		return "", apierr.New(http.StatusUnauthorized, "missing_token", "Authorization header with a token is required")
	}
	if len(vals) > 1 {
		return "", apierr.New(http.StatusBadRequest, "malformed_authorization", "more than one Authorization header")
	}
	v := vals[0]
	if len(v) > auth.MaxTokenBytes+len("Bearer ") {
		return "", apierr.New(http.StatusBadRequest, "authorization_too_large", fmt.Sprintf("Authorization header longer than %d bytes", auth.MaxTokenBytes))
	}
	scheme, rest, hasSpace := strings.Cut(v, " ")
	switch {
	case strings.EqualFold(v, "Bearer"):
		return "", apierr.New(http.StatusBadRequest, "malformed_authorization", "want Authorization: Bearer <token>")
	case !hasSpace:
		return v, nil // bare token
	case strings.EqualFold(scheme, "Bearer"):
		tok := strings.TrimSpace(rest)
		if tok == "" || strings.ContainsAny(tok, " \t") {
			return "", apierr.New(http.StatusBadRequest, "malformed_authorization", "want Authorization: Bearer <token>")
		}
		return tok, nil
	}
	return "", apierr.New(http.StatusBadRequest, "malformed_authorization", "want Authorization: Bearer <token>")
}

func (h *Handler) serveAccess(w http.ResponseWriter, r *http.Request) {
	if !h.originAllowed(r) {
		apierr.WriteNew(w, http.StatusForbidden, "origin_forbidden", "origin not allowed")
		return
	}
	h.setCORS(w, r)
	prefix, name, e := target(r)
	if e != nil {
		apierr.Write(w, e)
		return
	}
	g, e := h.authorize(r, prefix, name)
	if e != nil {
		if e.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		apierr.Write(w, e)
		return
	}
	code := NewCode(h.cfg.NodeID)
	if err := h.cfg.Codes.Put(code, g, h.cfg.Now().Add(h.cfg.CodeTTL)); err != nil {
		if errors.Is(err, ErrCodeStoreFull) {
			apierr.WriteNew(w, http.StatusTooManyRequests, "too_many_codes", "too many pending codes; retry shortly")
			return
		}
		h.cfg.Logger.Error("access: storing code failed", "err", err)
		apierr.WriteNew(w, http.StatusServiceUnavailable, "code_store_unavailable", "could not issue a code; retry shortly")
		return
	}
	apierr.WriteJSON(w, http.StatusOK, struct {
		URI string `json:"uri"`
	}{h.wsBase + "/" + prefix + "/" + name + "?code=" + code})
}

// authorize checks the request's token for prefix and topic name and returns
// the grant a code will stand for.
func (h *Handler) authorize(r *http.Request, prefix, name string) (Grant, *apierr.Error) {
	tok, e := bearer(r)
	if e != nil {
		return Grant{}, e
	}
	c, err := h.cfg.Verifier.Verify(tok)
	if err == nil {
		err = auth.CheckRelayClaims(c)
	}
	if err != nil {
		var ae *auth.Error
		if errors.As(err, &ae) {
			return Grant{}, apierr.New(http.StatusUnauthorized, ae.Code, ae.Message)
		}
		return Grant{}, apierr.New(http.StatusUnauthorized, auth.CodeMalformed, "token rejected")
	}
	if c.Prefix != prefix {
		return Grant{}, apierr.New(http.StatusForbidden, "prefix_forbidden", fmt.Sprintf("token is for connection type %q, not %q", truncate(c.Prefix, 32), prefix))
	}
	if !topic.Match(c.Topic, name) {
		return Grant{}, apierr.New(http.StatusForbidden, "topic_forbidden", "token does not grant this topic")
	}
	g := Grant{
		Topic: name, Prefix: prefix,
		CanRead: c.HasScope(auth.ScopeRead), CanWrite: c.HasScope(auth.ScopeWrite),
		BookingID: c.BookingID, Subject: c.Subject, TokenID: c.ID, TokenExpiry: c.Expiry(),
	}
	if !g.CanRead && !g.CanWrite {
		return Grant{}, apierr.New(http.StatusForbidden, "scope_forbidden", "token needs scope read and/or write")
	}
	return g, nil
}

func (h *Handler) serveWebsocket(w http.ResponseWriter, r *http.Request) {
	prefix, name, e := target(r)
	if e != nil {
		apierr.Write(w, e)
		return
	}
	if !h.originAllowed(r) {
		apierr.WriteNew(w, http.StatusForbidden, "origin_forbidden", "origin not allowed")
		return
	}
	if !isUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		apierr.WriteNew(w, http.StatusUpgradeRequired, "upgrade_required", "this endpoint needs a websocket upgrade; POST here first to get a code")
		return
	}
	g, e := h.redeem(r.URL.Query().Get("code"), prefix, name)
	if e != nil {
		apierr.Write(w, e)
		return
	}
	conn, err := wsconn.Upgrade(w, r, wsconn.Options{MaxMessageBytes: h.maxMessage})
	if err != nil {
		h.cfg.Logger.Debug("access: websocket upgrade failed", "path", r.URL.Path, "err", err)
		return
	}
	info := relay.Info{
		Topic: g.Topic, Prefix: g.Prefix, CanRead: g.CanRead, CanWrite: g.CanWrite,
		ExpiresAt: g.TokenExpiry, BookingID: g.BookingID, Subject: g.Subject, TokenID: g.TokenID,
		RemoteAddr: r.RemoteAddr, UserAgent: truncate(r.UserAgent(), 256),
	}
	// The request context ends when the handler returns; the connection's
	// lifetime is the relay's to manage.
	h.cfg.Relay.Accept(context.WithoutCancel(r.Context()), conn, info)
}

// redeem takes a code and checks it against the request.
func (h *Handler) redeem(code, prefix, name string) (Grant, *apierr.Error) {
	if code == "" {
		return Grant{}, apierr.New(http.StatusUnauthorized, "code_missing", "query parameter code is required; POST to this path with a token to get one")
	}
	node, ok := ParseCode(code)
	if !ok {
		return Grant{}, apierr.New(http.StatusUnauthorized, "code_malformed", "code is not of the form issued by this relay")
	}
	if node != h.cfg.NodeID {
		return Grant{}, apierr.New(http.StatusMisdirectedRequest, "code_wrong_node", fmt.Sprintf("code was issued by node %q, this is %q", node, h.cfg.NodeID))
	}
	g, expires, ok := h.cfg.Codes.Take(code)
	if !ok {
		return Grant{}, apierr.New(http.StatusUnauthorized, "code_invalid", "code is unknown or already used")
	}
	now := h.cfg.Now()
	if now.After(expires) {
		return Grant{}, apierr.New(http.StatusUnauthorized, "code_expired", "code has expired; request a new one")
	}
	if g.Topic != name || g.Prefix != prefix {
		return Grant{}, apierr.New(http.StatusForbidden, "code_topic_mismatch", "code was issued for another topic")
	}
	if !g.TokenExpiry.IsZero() && !now.Before(g.TokenExpiry) {
		return Grant{}, apierr.New(http.StatusUnauthorized, auth.CodeExpired, "token has expired")
	}
	return g, nil
}

func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
