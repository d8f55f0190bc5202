// Package access is the relay's HTTP front: the access endpoint that trades a
// token for a one-time code, and the websocket endpoint that trades the code
// for a connection of one connection type (its {prefix}).
//
//	POST /{prefix}/{topic...}           Authorization: Bearer <jwt>  → 200 {"uri": "ws(s)://…?code=CODE"}
//	GET  /{prefix}/{topic...}?code=CODE (websocket upgrade)          → a connection of that type
//	GET  /{prefix}/{topic...}           (websocket upgrade)          → the same, in one step
//	     Sec-WebSocket-Protocol: switchboard.v1, switchboard.bearer.<jwt>
//	GET  /session/{topic...}?code=CODE  Accept: text/event-stream    → a read-only event stream (sse.go)
//
// The one-step connect (wire.BearerSubprotocolPrefix) is checked by the same
// code as the access request (authorize) and ends as the code exchange does
// (connect); it is served where it arrives, never placed at a topic's home
// node, and refused (421) for a connection that must meet its peer there
// (Permit.Home) on another node of a cluster.
//
// Connection types are an endpoint registry by prefix (Endpoint,
// Handler.Handle): wire.PrefixSession (shared relay topics) is built in; the
// composition root registers the others — shell (internal/shell) and the
// agent control channel (internal/jobs/agentlink). An unregistered prefix
// is 404 unknown_prefix. What every type shares is done here, uniformly:
// Origin checks, token verification, revocation checks at the access
// request and the code exchange (Config.Denier), the one-time codes
// (CodeStore), the connection limits per token and subject (limits.go), and
// the websocket handshake; an endpoint decides only what a token may do on
// its topics, may re-check at the exchange, and serves the connection.
//
// Every refusal is a JSON error (see internal/apierr) with the right status,
// given before any websocket upgrade. Tokens and codes are never logged.
//
// Locking: the registry is copy-on-write (Handler.endpoints is read without
// a lock; Handle writes under endpointsMu); the code store, the connection
// limits and the outcome counters each have a mutex of their own that is
// never held across I/O or a call into an endpoint.
package access

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/sseconn"
	"github.com/switchboard-hub/switchboard/internal/topic"
	"github.com/switchboard-hub/switchboard/internal/wsconn"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

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
	// RemoteCodes, when set, takes the codes other nodes of the cluster
	// issued (cluster.CodeRouter); nil refuses them (421 code_wrong_node).
	RemoteCodes RemoteCodes
	// Placement, when set, has a topic's codes issued at its home node
	// (cluster.CodeRouter), so that the connections to one topic meet on
	// one node and a shell user meets its host; nil: codes are issued
	// where the access request arrives.
	Placement Placement
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
	// Denier, if set, is asked on every access request and code exchange
	// whether the token has been revoked.
	Denier Denier
	// TrustedProxies are the networks of reverse proxies whose
	// X-Forwarded-For header is believed for the client's address.
	TrustedProxies []netip.Prefix
	// SystemTopics maps topics only the server publishes to (e.g. "stats")
	// to the scope needed to read them. Nobody may write to them.
	SystemTopics map[string]string
	// SystemPrefixes maps topic prefixes (ending in "/") under which only
	// the server publishes (e.g. "jobs/" for the jobs' live logs) to the
	// scope a pattern token needs to reach topics below them; a token for
	// exactly one such topic needs only read (system.go).
	SystemPrefixes map[string]string
	// Coalesce lists topic patterns whose session readers get what is
	// queued for them merged into one message (practable.go); empty: none.
	Coalesce []string
	// PractableStats, if set, serves practable's stats feed (practable.go).
	PractableStats *PractableStats
	// MaxConnsPerToken and MaxConnsPerSubject bound the connections one
	// token and one subject may hold open at once (of every prefix); a
	// connection over either is refused with 429 too_many_connections.
	// 0 means DefaultMaxConnsPerToken and DefaultMaxConnsPerSubject.
	MaxConnsPerToken, MaxConnsPerSubject int
	// PublishLimits bound the HTTP publish requests of one token and one
	// client address (publishlimits.go); zero values are the defaults.
	PublishLimits PublishLimits
	// SSEHeartbeat is how often an event stream gets its ": ping" comment
	// (0: DefaultSSEHeartbeat; negative: never), instead of the relay's
	// ping interval: proxies that time idle responses out often do so
	// well before a websocket's 30 s.
	SSEHeartbeat time.Duration
}

// DefaultSSEHeartbeat is the default of Config.SSEHeartbeat.
const DefaultSSEHeartbeat = 15 * time.Second

// Denier reports revocations. It is called on every access request and code
// exchange, of every endpoint, so it must be fast (an in-memory lookup).
type Denier interface {
	// Denied reports whether a token with these claims is revoked, and
	// the revocation's kind ("booking", "subject" or "token").
	Denied(bookingID, subject, tokenID string) (kind string, denied bool)
}

// Handler serves the access and websocket endpoints.
type Handler struct {
	outcomes outcomeCounters
	// endpoints is the registry by prefix: an immutable map, replaced
	// whole by Handle (under endpointsMu), read without a lock.
	endpoints   atomic.Pointer[map[string]Endpoint]
	endpointsMu sync.Mutex // serialises Handle
	cfg         Config
	wsBase      string // ws(s)://host/path-prefix of handed-out URIs
	selfOrigin  string
	origins     map[string]bool
	anyOrigin   bool
	maxMessage  int
	limits      *connLimits
	// publishLimits and publishCounts are HTTP publish's token buckets
	// and counters (publishlimits.go).
	publishLimits *publishLimiter
	publishCounts publishCounters
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.PublicURL == nil || cfg.Verifier == nil || cfg.Relay == nil {
		return nil, errors.New("access: PublicURL, Verifier and Relay are required")
	}
	if !wire.ValidNodeID(cfg.NodeID) {
		return nil, fmt.Errorf("access: node id %q: want 1-32 characters of a-z 0-9 -", cfg.NodeID)
	}
	if cfg.Codes == nil {
		cfg.Codes = NewMemoryCodeStore(0, cfg.Now)
	}
	switch {
	case cfg.CodeTTL < 0:
		return nil, fmt.Errorf("access: code TTL %v (--code-ttl): must not be negative; 0 means %v", cfg.CodeTTL, DefaultCodeTTL)
	case cfg.MaxConnsPerToken < 0:
		return nil, fmt.Errorf("access: connections per token %d (--max-conns-per-token): must not be negative", cfg.MaxConnsPerToken)
	case cfg.MaxConnsPerSubject < 0:
		return nil, fmt.Errorf("access: connections per subject %d (--max-conns-per-subject): must not be negative", cfg.MaxConnsPerSubject)
	}
	if err := validCoalesce(cfg.Coalesce); err != nil {
		return nil, err
	}
	if cfg.PractableStats != nil && cfg.PractableStats.Scope == "" {
		return nil, errors.New("access: practable stats feed: a scope is required (--practable-stats)")
	}
	if cfg.CodeTTL == 0 {
		cfg.CodeTTL = DefaultCodeTTL
	}
	if cfg.MaxConnsPerToken == 0 {
		cfg.MaxConnsPerToken = DefaultMaxConnsPerToken
	}
	if cfg.MaxConnsPerSubject == 0 {
		cfg.MaxConnsPerSubject = DefaultMaxConnsPerSubject
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SSEHeartbeat == 0 {
		cfg.SSEHeartbeat = DefaultSSEHeartbeat
	}
	publishLimits, err := cfg.PublishLimits.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg.PublishLimits = publishLimits
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
		limits:     newConnLimits(cfg.MaxConnsPerToken, cfg.MaxConnsPerSubject),

		publishLimits: newPublishLimiter(publishLimits, cfg.Now),
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
	h.endpoints.Store(&map[string]Endpoint{wire.PrefixSession: sessionEndpoint{h}})
	return h, nil
}

// RoutePath is the path pattern of the access and websocket endpoints. It
// matches any path of two or more segments: a router asking which methods a
// path allows must ignore it unless the first segment is a KnownPrefix.
const RoutePath = "/{prefix}/{topic...}"

// Register adds the handler's routes to mux: the access and websocket
// endpoints (RouteMethods at RoutePath), and HTTP publish (publish.go).
func (h *Handler) Register(mux *http.ServeMux) {
	for _, m := range RouteMethods {
		mux.HandleFunc(m+" "+RoutePath, func(w http.ResponseWriter, r *http.Request) {
			h.ServePath(w, r, r.PathValue("prefix"), r.PathValue("topic"))
		})
	}
	mux.HandleFunc("POST "+wire.PublishPath, h.ServePublish)
	mux.HandleFunc("OPTIONS "+wire.PublishPath, h.answerPreflight)
}

// RouteMethods are the methods Register serves at RoutePath (a GET pattern
// also serves HEAD).
var RouteMethods = []string{http.MethodPost, http.MethodOptions, http.MethodGet}

// ServePath serves r as the routes Register adds do, given the two parts
// of its path /{prefix}/{topic...} unescaped as http.ServeMux's PathValue
// gives them, and reports whether r's method is one of those routes' (if
// not, nothing is written: the caller answers 405). A router that has split
// the path itself calls it directly: on every connect, matching the
// server's whole ServeMux cost more CPU than the access request's own
// checks (docs/BENCHMARKS.md, "Connect path: a cheaper two-step").
func (h *Handler) ServePath(w http.ResponseWriter, r *http.Request, prefix, topic string) bool {
	switch r.Method {
	case http.MethodPost:
		h.serveAccess(w, r, prefix, topic)
	case http.MethodGet, http.MethodHead:
		h.serveWebsocket(w, r, prefix, topic)
	case http.MethodOptions:
		h.servePreflight(w, r, prefix, topic)
	default:
		return false
	}
	return true
}

// KnownPrefix reports whether prefix names a connection type this node
// serves (the first segment of its access and websocket paths): a
// registered Endpoint.
func (h *Handler) KnownPrefix(prefix string) bool { return h.endpoint(prefix) != nil }

// target checks the prefix and topic of a request path and returns the
// prefix's endpoint.
func (h *Handler) target(prefix, name string) (ep Endpoint, err *apierr.Error) {
	if ep = h.endpoint(prefix); ep == nil {
		return nil, apierr.New(http.StatusNotFound, wire.ErrorUnknownPrefix, fmt.Sprintf("no connection type %q here (known: %s)", truncate(prefix, 32), h.prefixes()))
	}
	if e := topic.Valid(name); e != nil {
		return nil, apierr.New(http.StatusBadRequest, wire.ErrorInvalidTopic, e.Error())
	}
	return ep, nil
}

// originAllowed reports whether a request's Origin may use the relay. A
// request without Origin is not from a browser and is allowed.
func (h *Handler) originAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || h.anyOrigin || h.origins[o] || o == h.selfOrigin {
		return true
	}
	// Same origin as the request's own Host (e.g. behind a proxy that keeps
	// Host), on the scheme browsers reach this server by: an http page of
	// the same host is another origin than an https one.
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) && u.Scheme == h.cfg.PublicURL.Scheme
}

// varyOrigin is the Vary header of answers that depend on Origin; shared
// by every answer (header values are replaced, never modified in place).
var varyOrigin = []string{"Origin"}

func (h *Handler) setCORS(w http.ResponseWriter, r *http.Request) {
	if hdr := w.Header(); len(hdr["Vary"]) == 0 {
		hdr["Vary"] = varyOrigin
	} else {
		hdr.Add("Vary", "Origin")
	}
	if o := r.Header.Get("Origin"); o != "" {
		w.Header().Set("Access-Control-Allow-Origin", o)
	}
}

func (h *Handler) servePreflight(w http.ResponseWriter, r *http.Request, prefix, name string) {
	if _, e := h.target(prefix, name); e != nil {
		apierr.Write(w, e)
		return
	}
	h.answerPreflight(w, r)
}

// answerPreflight answers a browser's CORS preflight of a POST (an access
// request or HTTP publish): the server's own origin, Config.AllowedOrigins,
// or any with "*".
func (h *Handler) answerPreflight(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") == "" || !h.originAllowed(r) {
		apierr.WriteNew(w, http.StatusForbidden, wire.ErrorOriginForbidden, "origin not allowed")
		return
	}
	h.setCORS(w, r)
	w.Header().Set("Access-Control-Allow-Methods", "POST")
	w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	w.Header().Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// BearerToken extracts the token from the Authorization header, accepting
// "Bearer <jwt>" and the bare "<jwt>" that practable clients send.
func BearerToken(r *http.Request) (string, *apierr.Error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 || vals[0] == "" {
		return "", apierr.New(http.StatusUnauthorized, wire.ErrorMissingToken, "Authorization header with a token is required")
	}
	if len(vals) > 1 {
		return "", apierr.New(http.StatusBadRequest, wire.ErrorMalformedAuthorization, "more than one Authorization header")
	}
	v := vals[0]
	if len(v) > auth.MaxTokenBytes+len("Bearer ") {
		return "", apierr.New(http.StatusBadRequest, wire.ErrorAuthorizationTooLarge, fmt.Sprintf("Authorization header longer than %d bytes", auth.MaxTokenBytes))
	}
	scheme, rest, hasSpace := strings.Cut(v, " ")
	switch {
	case strings.EqualFold(v, "Bearer"):
		return "", apierr.New(http.StatusBadRequest, wire.ErrorMalformedAuthorization, "want Authorization: Bearer <token>")
	case !hasSpace:
		return v, nil // bare token
	case strings.EqualFold(scheme, "Bearer"):
		tok := strings.TrimSpace(rest)
		if tok == "" || strings.ContainsAny(tok, " \t") {
			return "", apierr.New(http.StatusBadRequest, wire.ErrorMalformedAuthorization, "want Authorization: Bearer <token>")
		}
		return tok, nil
	}
	return "", apierr.New(http.StatusBadRequest, wire.ErrorMalformedAuthorization, "want Authorization: Bearer <token>")
}

func (h *Handler) serveAccess(w http.ResponseWriter, r *http.Request, prefix, name string) {
	if !h.originAllowed(r) {
		h.refuse(w, StageAccess, apierr.New(http.StatusForbidden, wire.ErrorOriginForbidden, "origin not allowed"))
		return
	}
	h.setCORS(w, r)
	ep, e := h.target(prefix, name)
	if e != nil {
		h.refuse(w, StageAccess, e)
		return
	}
	tok, e := BearerToken(r)
	if e != nil {
		h.refuseToken(w, StageAccess, e)
		return
	}
	g, _, e := h.authorize(tok, prefix, name, ep)
	if e != nil {
		h.refuseToken(w, StageAccess, e)
		return
	}
	if e := h.limits.check(&g); e != nil {
		h.refuse(w, StageAccess, e)
		return
	}
	uri, err := h.issueAtHome(r.Context(), g)
	if err != nil {
		if errors.Is(err, ErrCodeStoreFull) || errors.Is(err, ErrTooManyForOwner) {
			w.Header().Set("Retry-After", "5")
			h.refuse(w, StageAccess, apierr.New(http.StatusTooManyRequests, wire.ErrorTooManyCodes, "too many pending codes; use or let some expire, then retry"))
			return
		}
		h.cfg.Logger.Error("access: storing code failed", "err", err)
		h.refuse(w, StageAccess, apierr.New(http.StatusServiceUnavailable, wire.ErrorCodeStoreUnavailable, "could not issue a code; retry shortly"))
		return
	}
	h.outcomes.add(StageAccess, "ok")
	writeURI(w, uri)
}

// Headers of an access request's answer, shared by every answer (header
// values are replaced, never modified in place).
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
)

// writeURI answers an access request, 200 {"uri": uri}, exactly as
// apierr.WriteJSON writes it, without encoding/json for the one string
// when uri is printable ASCII that JSON leaves as it is (always, for the
// URIs issue builds; anything else goes through apierr.WriteJSON).
func writeURI(w http.ResponseWriter, uri string) {
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			apierr.WriteJSON(w, http.StatusOK, struct {
				URI string `json:"uri"`
			}{uri})
			return
		}
	}
	hdr := w.Header()
	hdr["Content-Type"], hdr["Cache-Control"] = jsonContentType, noStore
	w.WriteHeader(http.StatusOK)
	const open, end = `{"uri":"`, "\"}\n"
	body := make([]byte, 0, len(open)+len(uri)+len(end))
	body = append(append(append(body, open...), uri...), end...)
	_, _ = w.Write(body)
}

// Stages of a connection, for counting outcomes.
const (
	StageAccess   = "access"   // token → code
	StageExchange = "exchange" // code → websocket
	StageConnect  = "connect"  // token in the bearer subprotocol → websocket (one step)
)

// refuse answers with e and counts it under its code.
func (h *Handler) refuse(w http.ResponseWriter, stage string, e *apierr.Error) {
	h.outcomes.add(stage, e.Code)
	apierr.Write(w, e)
}

// refuseToken answers a refusal of the token (or of what it asks for) as
// refuse does, with the WWW-Authenticate challenge a 401 needs.
func (h *Handler) refuseToken(w http.ResponseWriter, stage string, e *apierr.Error) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	h.refuse(w, stage, e)
}

// Outcomes returns how many access requests and code exchanges ended with
// each outcome ("ok" or an error code), by stage.
func (h *Handler) Outcomes() map[string]map[string]uint64 { return h.outcomes.snapshot() }

// outcomeCounters counts outcomes by stage and code.
type outcomeCounters struct {
	mu sync.Mutex
	n  map[[2]string]uint64 // guarded by mu; key: stage, outcome
}

func (o *outcomeCounters) add(stage, outcome string) {
	o.mu.Lock()
	if o.n == nil {
		o.n = make(map[[2]string]uint64)
	}
	o.n[[2]string{stage, outcome}]++
	o.mu.Unlock()
}

func (o *outcomeCounters) snapshot() map[string]map[string]uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]map[string]uint64{StageAccess: {}, StageExchange: {}, StageConnect: {}}
	for k, v := range o.n {
		out[k[0]][k[1]] = v
	}
	return out
}

// remoteAddr is the peer's address: the connection's, or the client named
// in X-Forwarded-For when the connection comes from a trusted proxy.
func (h *Handler) remoteAddr(r *http.Request) string {
	if len(h.cfg.TrustedProxies) == 0 {
		return r.RemoteAddr
	}
	return ClientAddr(r, h.cfg.TrustedProxies)
}

// ClientAddr returns the client address of r: X-Forwarded-For is believed,
// from the right, only as far as each hop is one of the trusted proxies.
func ClientAddr(r *http.Request, trusted []netip.Prefix) string {
	addr := r.RemoteAddr
	peer, err := netip.ParseAddrPort(addr)
	if err != nil || !isTrusted(peer.Addr(), trusted) {
		return addr
	}
	hops := r.Header.Values("X-Forwarded-For")
	var chain []string
	for _, h := range hops {
		for _, p := range strings.Split(h, ",") {
			chain = append(chain, strings.TrimSpace(p))
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(chain[i])
		if err != nil {
			return addr // malformed: keep the last address we could trust
		}
		addr = a.String()
		if !isTrusted(a, trusted) {
			return addr
		}
	}
	return addr
}

// tokenOwner identifies tok in per-token quotas (Grant.Owner) without
// keeping it: a digest.
func tokenOwner(tok string) string {
	d := sha256.Sum256([]byte(tok))
	return base64.RawURLEncoding.EncodeToString(d[:12])
}

// ClientIP is ClientAddr without the port: the client's IP address, the
// key of limits per address (false if r names none).
func ClientIP(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	a := ClientAddr(r, trusted)
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return ap.Addr().Unmap(), true
	}
	if ip, err := netip.ParseAddr(a); err == nil {
		return ip.Unmap(), true
	}
	return netip.Addr{}, false
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// authorize checks token for prefix and topic name, asks the prefix's
// endpoint what the token may do there, refuses a revoked token, and
// returns the grant a code (or a one-step connection) stands for and the
// endpoint's permit. The access request and the one-step connect both
// decide here, so they refuse alike.
func (h *Handler) authorize(tok, prefix, name string, ep Endpoint) (Grant, Permit, *apierr.Error) {
	c, e := h.verifyRelayToken(tok)
	if e != nil {
		return Grant{}, Permit{}, e
	}
	return h.grant(c, tok, prefix, name, ep)
}

// verifyRelayToken checks tok's signature, audience, times and relay
// claims (401 when it fails).
func (h *Handler) verifyRelayToken(tok string) (*auth.Claims, *apierr.Error) {
	c, err := h.cfg.Verifier.Verify(tok)
	if err == nil {
		err = auth.CheckRelayClaims(c)
	}
	if err != nil {
		var ae *auth.Error
		if errors.As(err, &ae) {
			return nil, apierr.New(http.StatusUnauthorized, ae.Code, ae.Message)
		}
		return nil, apierr.New(http.StatusUnauthorized, wire.ErrorTokenMalformed, "token rejected")
	}
	return c, nil
}

// grant is authorize after the token's verification: c are tok's verified
// claims.
func (h *Handler) grant(c *auth.Claims, tok, prefix, name string, ep Endpoint) (Grant, Permit, *apierr.Error) {
	if c.Prefix != prefix {
		return Grant{}, Permit{}, apierr.New(http.StatusForbidden, wire.ErrorPrefixForbidden, fmt.Sprintf("token is for connection type %q, not %q", truncate(c.Prefix, 32), prefix))
	}
	if !topic.Match(c.Topic, name) {
		return Grant{}, Permit{}, apierr.New(http.StatusForbidden, wire.ErrorTopicForbidden, "token does not grant this topic")
	}
	p, e := ep.Authorize(c, name)
	if e != nil {
		return Grant{}, Permit{}, e
	}
	if !p.CanRead && !p.CanWrite {
		return Grant{}, Permit{}, apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, "token needs scope read and/or write")
	}
	g := Grant{
		Owner: tokenOwner(tok),
		Topic: name, Prefix: prefix, Scopes: c.Scopes,
		CanRead: p.CanRead, CanWrite: p.CanWrite, System: p.System, Role: p.Role, Labels: p.Labels, Local: p.Local,
		Identity:    relay.Identity{BookingID: c.BookingID, Subject: c.Subject, TokenID: c.ID},
		TokenExpiry: c.Expiry(),
	}
	if e := h.CheckDenied(&g); e != nil {
		return Grant{}, Permit{}, e
	}
	return g, p, nil
}

// CheckDenied refuses g if its booking, subject or token is revoked
// (Config.Denier), as the Handler does at every access request and code
// exchange. An endpoint that admits a connection later, under a lock of its
// own, calls it again under that lock, so that a revocation is either seen
// there or finds the connection (internal/shell).
func (h *Handler) CheckDenied(g *Grant) *apierr.Error {
	if h.cfg.Denier == nil {
		return nil
	}
	kind, denied := h.cfg.Denier.Denied(g.BookingID, g.Subject, g.TokenID)
	if !denied {
		return nil
	}
	if kind == "booking" {
		return apierr.New(http.StatusForbidden, wire.ErrorBookingDenied, "this booking has been denied")
	}
	return apierr.New(http.StatusForbidden, wire.ErrorTokenRevoked, "this token has been revoked ("+kind+")")
}

func (h *Handler) serveWebsocket(w http.ResponseWriter, r *http.Request, prefix, name string) {
	// The one-step connect: no code, the token in the bearer subprotocol.
	// Its parse error, if any, is answered at the credentials' turn below,
	// after the same checks of path, origin and handshake as an exchange.
	tok, oneStep, tokErr := bearerSubprotocol(r)
	stage := StageExchange
	if oneStep {
		stage = StageConnect
	}
	ep, e := h.target(prefix, name)
	if e != nil {
		h.refuse(w, stage, e)
		return
	}
	if !h.originAllowed(r) {
		h.refuse(w, stage, apierr.New(http.StatusForbidden, wire.ErrorOriginForbidden, "origin not allowed"))
		return
	}
	if !oneStep && !isUpgrade(r) && wantsEventStream(r) {
		h.serveEventStream(w, r, stage, prefix, name, ep)
		return
	}
	if !isUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		h.refuse(w, stage, apierr.New(http.StatusUpgradeRequired, wire.ErrorUpgradeRequired, "this endpoint needs a websocket upgrade; POST here first to get a code"))
		return
	}
	if e := checkHandshake(w, r); e != nil {
		h.refuse(w, stage, e)
		return
	}
	if !oneStep {
		code, _ := queryValue(r.URL.RawQuery, "code")
		g, e := h.redeem(r.Context(), code, prefix, name)
		if e != nil {
			h.refuse(w, stage, e)
			return
		}
		h.connect(w, r, stage, ep, g, false)
		return
	}
	if _, hasCode := queryValue(r.URL.RawQuery, "code"); tokErr == nil && hasCode {
		tokErr = apierr.New(http.StatusBadRequest, wire.ErrorMalformedAuthorization, "a code and a bearer subprotocol: present one of them")
	}
	if tokErr != nil {
		h.refuseToken(w, stage, tokErr)
		return
	}
	g, p, e := h.authorize(tok, prefix, name, ep)
	if e != nil {
		h.refuseToken(w, stage, e)
		return
	}
	if e := h.checkServedHere(g, p); e != nil {
		h.refuse(w, stage, e)
		return
	}
	h.connect(w, r, stage, ep, g, false)
}

// bearerSubprotocol returns the token a websocket handshake offers in the
// bearer subprotocol (wire.BearerSubprotocolPrefix + token), and whether it
// offers one: then the handshake is a one-step connect. An offer the
// one-step connect cannot take is refused as a bad Authorization header
// is: two bearer subprotocols, a token over auth.MaxTokenBytes, or no
// wire.Subprotocol beside it (the 101 selects it; a browser fails a
// handshake whose offered subprotocols were all declined). The token is
// never logged or echoed.
func bearerSubprotocol(r *http.Request) (tok string, offered bool, e *apierr.Error) {
	vals := r.Header.Values("Sec-Websocket-Protocol")
	if len(vals) == 0 {
		return "", false, nil
	}
	var n int
	var relayProtocol bool
	for _, v := range vals {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			if len(p) > len(wire.BearerSubprotocolPrefix) && strings.EqualFold(p[:len(wire.BearerSubprotocolPrefix)], wire.BearerSubprotocolPrefix) {
				n++
				tok = p[len(wire.BearerSubprotocolPrefix):]
			} else if strings.EqualFold(p, wire.Subprotocol) {
				relayProtocol = true
			}
		}
	}
	switch {
	case n == 0:
		return "", false, nil
	case n > 1:
		return "", true, apierr.New(http.StatusBadRequest, wire.ErrorMalformedAuthorization, "more than one bearer subprotocol")
	case len(tok) > auth.MaxTokenBytes:
		return "", true, apierr.New(http.StatusBadRequest, wire.ErrorAuthorizationTooLarge, fmt.Sprintf("bearer subprotocol token longer than %d bytes", auth.MaxTokenBytes))
	case !relayProtocol:
		return "", true, apierr.New(http.StatusBadRequest, wire.ErrorMalformedAuthorization, "offer subprotocol "+wire.Subprotocol+" beside the bearer subprotocol")
	}
	return tok, true, nil
}

// checkServedHere refuses a one-step connection that must meet its peer at
// its topic's home node (Permit.Home) when, in a cluster, that is another
// node: the two-step flow issues its code there. Every other connection is
// served where it arrives (the bus carries its topic across nodes).
func (h *Handler) checkServedHere(g Grant, p Permit) *apierr.Error {
	pl := h.cfg.Placement
	if pl == nil || !p.Home || g.Local || g.System {
		return nil
	}
	if home := pl.Home(g.Prefix, g.Topic); home != "" && home != h.cfg.NodeID {
		return apierr.New(http.StatusMisdirectedRequest, wire.ErrorTwoStepRequired, "this connection meets its peer on another node: POST here for a code instead")
	}
	return nil
}

// connect admits the connection g stands for — the endpoint's Admit, the
// limits of its token and subject — upgrades it and hands it to the
// endpoint: the last steps of the code exchange and of the one-step
// connect alike. With stream, the connection is an event stream over w
// (internal/sseconn) instead of a websocket, served on this handler's
// goroutine, which must not return before it ends.
func (h *Handler) connect(w http.ResponseWriter, r *http.Request, stage string, ep Endpoint, g Grant, stream bool) {
	var (
		adm Admission
		e   *apierr.Error
	)
	if a, ok := ep.(Admitter); ok {
		if adm, e = a.Admit(g); e != nil {
			h.refuse(w, stage, e)
			return
		}
	}
	cancel := func() {
		if adm.Cancel != nil {
			adm.Cancel()
		}
	}
	// A peer's connection (IssuePeer) counts as the connection that
	// admitted it, not again as one of its token's.
	counted := !g.Peer
	if counted {
		if e := h.limits.acquire(&g); e != nil {
			cancel()
			h.refuse(w, stage, e)
			return
		}
	}
	var (
		conn relay.Conn
		err  error
	)
	if stream {
		conn = sseconn.New(w, r)
	} else {
		holder, ok := ep.(HandshakeHolder)
		hold := ok && adm.Serve == nil && holder.HoldsHandshake(g)
		conn, err = wsconn.Upgrade(w, r, wsconn.Options{MaxMessageBytes: h.maxMessage, HoldHandshake: hold, Subprotocols: relaySubprotocols})
	}
	if err != nil {
		h.outcomes.add(stage, "upgrade_failed")
		h.cfg.Logger.Debug("access: websocket upgrade failed", "path", r.URL.Path, "err", err)
		cancel()
		if counted {
			h.limits.release(&g)
		}
		return
	}
	h.outcomes.add(stage, "ok")
	info := relay.Info{
		Topic: g.Topic, Prefix: g.Prefix, CanRead: g.CanRead, CanWrite: g.CanWrite,
		ExpiresAt: g.TokenExpiry, Identity: g.Identity,
		Scopes: g.Scopes, SystemTopic: g.System,
		RemoteAddr: h.remoteAddr(r), UserAgent: truncate(r.UserAgent(), 256),
	}
	if _, ok := conn.(*sseconn.Conn); ok {
		info.PingInterval = h.cfg.SSEHeartbeat
	}
	// The connection is the endpoint's from here, on a goroutine of its
	// own: this handler's goroutine returns, and with it its deep stack
	// and the request's buffers, which an idle connection would otherwise
	// pin. The relay's Shutdown ends it. An event stream is not hijacked:
	// its response ends when this handler returns, so it is served here.
	serve := func() {
		if counted {
			defer h.limits.release(&g)
		}
		if adm.Serve != nil {
			adm.Serve(context.Background(), conn, info)
			return
		}
		ep.Serve(context.Background(), conn, g, info)
	}
	if sc, ok := conn.(*sseconn.Conn); ok {
		serve()
		if sc.Aborted() {
			panic(http.ErrAbortHandler) // break the response off, not end it as complete
		}
		return
	}
	go serve()
}

// relaySubprotocols is what the handshake may select: wire.Subprotocol
// when the client offers it (a one-step connect must), never the bearer
// subprotocol.
var relaySubprotocols = []string{wire.Subprotocol}

// RemoteCodeTimeout bounds taking a code from the node that issued it.
const RemoteCodeTimeout = 2 * time.Second

// PlacementTimeout bounds asking a topic's home node to issue a code; past
// it (a home that died and is not yet known to be down), the code is
// issued here, so an access request never waits long for placement.
const PlacementTimeout = 250 * time.Millisecond

// RemoteCodes takes codes that other nodes issued, from their CodeStore.
type RemoteCodes interface {
	// Take takes code from node's store, as CodeStore.Take does there (so
	// at most one of any number of concurrent takes, on any nodes,
	// succeeds). It fails with ErrCodeNodeGone at once when node is not
	// in the cluster, and with ctx's error when it does not answer.
	Take(ctx context.Context, node, code string) (g Grant, expires time.Time, ok bool, err error)
}

// ErrCodeNodeGone is RemoteCodes.Take's error for a node that is gone.
var ErrCodeNodeGone = errors.New("access: the code's node is gone")

// Placement chooses, in a cluster, the node that issues a topic's codes.
type Placement interface {
	// Home returns the id of the node that should issue codes for topic
	// of the connection type prefix (this node's own, or another's).
	Home(prefix, topic string) string
	// IssueAt has node issue a code for g, valid until expires, as
	// Handler.issue does there, and returns the code. Its errors are
	// ErrCodeStoreFull and ErrTooManyForOwner as CodeStore.Put's there,
	// or why node did not answer.
	IssueAt(ctx context.Context, node string, g Grant, expires time.Time) (code string, err error)
}

// redeem takes a code, from this node's store or from the node that issued
// it, and checks it against the request.
func (h *Handler) redeem(ctx context.Context, code, prefix, name string) (Grant, *apierr.Error) {
	if code == "" {
		return Grant{}, apierr.New(http.StatusUnauthorized, wire.ErrorCodeMissing, "query parameter code is required; POST to this path with a token to get one")
	}
	node, ok := wire.ParseCode(code)
	if !ok {
		return Grant{}, apierr.New(http.StatusUnauthorized, wire.ErrorCodeMalformed, "code is not of the form issued by this relay")
	}
	var (
		g       Grant
		expires time.Time
	)
	switch {
	case node == h.cfg.NodeID:
		if g, expires, ok = h.cfg.Codes.Take(code); !ok {
			return Grant{}, apierr.New(http.StatusUnauthorized, wire.ErrorCodeInvalid, "code is unknown or already used")
		}
	case h.cfg.RemoteCodes == nil:
		return Grant{}, apierr.New(http.StatusMisdirectedRequest, wire.ErrorCodeWrongNode, fmt.Sprintf("code was issued by node %q, this is %q", node, h.cfg.NodeID))
	default:
		ctx, cancel := context.WithTimeout(ctx, RemoteCodeTimeout)
		var err error
		g, expires, ok, err = h.cfg.RemoteCodes.Take(ctx, node, code)
		cancel()
		switch {
		case errors.Is(err, ErrCodeNodeGone):
			return Grant{}, apierr.New(http.StatusUnauthorized, wire.ErrorCodeInvalid, fmt.Sprintf("code was issued by node %q, which is gone; request a new code", node))
		case err != nil:
			h.cfg.Logger.Warn("access: taking a code from another node failed", "node", node, "err", err)
			return Grant{}, apierr.New(http.StatusServiceUnavailable, wire.ErrorCodeNodeUnavailable, fmt.Sprintf("code's node %q did not answer; retry, or request a new code", node))
		case !ok:
			return Grant{}, apierr.New(http.StatusUnauthorized, wire.ErrorCodeInvalid, "code is unknown or already used")
		}
	}
	now := h.cfg.Now()
	if now.After(expires) {
		return Grant{}, apierr.New(http.StatusUnauthorized, wire.ErrorCodeExpired, "code has expired; request a new one")
	}
	if g.Topic != name || g.Prefix != prefix {
		return Grant{}, apierr.New(http.StatusForbidden, wire.ErrorCodeTopicMismatch, "code was issued for another topic")
	}
	if !g.TokenExpiry.IsZero() && !now.Before(g.TokenExpiry.Add(h.cfg.Verifier.Leeway())) {
		return Grant{}, apierr.New(http.StatusUnauthorized, wire.ErrorTokenExpired, "token has expired")
	}
	if e := h.CheckDenied(&g); e != nil {
		return Grant{}, e
	}
	return g, nil
}

func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

// checkHandshake checks the rest of a websocket handshake (RFC 6455 §4.2.1)
// before the code is used up, so a malformed one gets a JSON error and can
// be retried with the same code.
func checkHandshake(w http.ResponseWriter, r *http.Request) *apierr.Error {
	// Canonical header names: Get then looks them up without
	// canonicalising them into a new string.
	if r.Header.Get("Sec-Websocket-Version") != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		return apierr.New(http.StatusUpgradeRequired, wire.ErrorBadWebsocketVersion, "websocket version 13 is required")
	}
	// 16 bytes are 24 characters of padded base64; decoded into an array
	// on the stack.
	var key [18]byte
	enc := r.Header.Get("Sec-Websocket-Key")
	if n, err := base64.StdEncoding.Decode(key[:], []byte(enc)); len(enc) != 24 || err != nil || n != 16 {
		return apierr.New(http.StatusBadRequest, wire.ErrorBadWebsocketKey, "Sec-WebSocket-Key must be 16 bytes in base64")
	}
	return nil
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for rest, more := v, true; more; {
			var t string
			t, rest, more = strings.Cut(rest, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// queryValue is url.Values.Get and Has of the query rawQuery (the first
// value of key, as url.ParseQuery decodes it: pairs with a semicolon or a
// bad escape are skipped) without building the map of every pair, which a
// connect does not need.
func queryValue(rawQuery, key string) (value string, found bool) {
	for rest := rawQuery; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(k)
		if err != nil || k != key {
			continue
		}
		if v, err = url.QueryUnescape(v); err != nil {
			continue
		}
		return v, true
	}
	return "", false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
