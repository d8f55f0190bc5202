// Package server assembles `switchboard serve`: it wires the relay core, the
// access endpoints, the control plane, the jobs API, the web dashboard and
// the health checks into one HTTP server with sane timeouts, and drains it
// on shutdown.
package server

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/apispec"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/buildinfo"
	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/jobs/agentlink"
	"github.com/switchboard-hub/switchboard/internal/jobs/uwsapi"
	"github.com/switchboard-hub/switchboard/internal/ratelimit"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/shell"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/web"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// DefaultShutdownTimeout bounds a graceful shutdown.
const DefaultShutdownTimeout = 10 * time.Second

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Listen is the TCP address to listen on. Required.
	Listen string
	// PublicURL is the base URL clients use (the token audience). Empty:
	// derived from the listening address ("http://127.0.0.1:8080").
	PublicURL string
	// Secret is the HMAC key for tokens. Required.
	Secret []byte
	// JWTAlgorithm is HS256 (default), HS384 or HS512.
	JWTAlgorithm string
	// Leeway is the clock skew tolerated on token times (default 5 s).
	Leeway time.Duration
	// NodeID names this node in one-time codes. Required.
	NodeID string
	// TLSCert and TLSKey, when both set, serve HTTPS.
	TLSCert, TLSKey string
	// Relay configures the relay core.
	Relay relay.Config
	// AllowedOrigins are extra browser origins allowed (see access.Config).
	AllowedOrigins []string
	// SSEHeartbeat is how often event streams get a heartbeat comment
	// (default access.DefaultSSEHeartbeat; negative: never).
	SSEHeartbeat time.Duration
	// CodeTTL is the validity of one-time codes (default 30 s).
	CodeTTL time.Duration
	// ShutdownTimeout bounds graceful shutdown after the lame-duck period
	// (default 10 s).
	ShutdownTimeout time.Duration
	// LameDuck is how long Shutdown keeps serving with /readyz failing
	// before it stops accepting, so that a load balancer's health checks
	// take the node out of rotation first (default 0: a node on its own
	// has no one to tell).
	LameDuck time.Duration
	// DrainWindow spreads the closing of the websockets (1001) over this
	// long, so that their clients do not all reconnect at the same moment
	// (default 0: all at once). It must be shorter than ShutdownTimeout.
	DrainWindow time.Duration
	// StatsEvery is how often the stats topic gets a report (default 5 s).
	StatsEvery time.Duration
	// PractableStats, if set, is the scope a token for the stats topic
	// needs to read practable's stats feed instead of ours (a token with
	// relay:stats still reads ours); empty: no practable feed.
	PractableStats string
	// Coalesce lists topic patterns whose readers get what is queued for
	// them merged into one message, as practable's relay does (access.Config).
	Coalesce []string
	// RevocationPoll is how often the node asks the store for revocation
	// changes it missed on the bus (default control.DefaultRevocationPoll).
	RevocationPoll time.Duration
	// MetricsListen, if set, serves /metrics without authentication on
	// this address (the main listener serves it to relay:stats tokens).
	MetricsListen string
	// TrustedProxies are networks whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// MaxTokenTTL and MaxRefreshLifetime bound the token API (defaults
	// 24 h and 7 days).
	MaxTokenTTL, MaxRefreshLifetime time.Duration
	// ShellAnswerTimeout is how long a shell host has to dial a new
	// session (default 10 s).
	ShellAnswerTimeout time.Duration
	// RequestTimeout bounds reading and answering an ordinary request
	// (default DefaultRequestTimeout). WAITs, uploads and downloads have
	// their own bounds (jobs.Config MaxWait, TransferIdleTimeout).
	RequestTimeout time.Duration
	// ResultsDir holds jobs' output files when Deps.Results is nil. Both
	// empty: no jobs API and no agent control channel on this node.
	ResultsDir string
	// Jobs tunes the jobs manager (Store, Blobs, ResultsDir, NodeID,
	// Publisher, Logger and Now are filled in by New).
	Jobs jobs.Config
	// Limits bound what one client may take of the node (connections per
	// token and subject, requests per address) and keep descriptors for
	// the health checks; zero values are the documented defaults.
	Limits Limits
	// Web configures the dashboard: login providers (OIDC, GitHub),
	// SessionTTL, APITokenTTL, Version, HTTPClient. New fills in
	// PublicURL, Key, Verifier, Store, Relay, API, CookieKey (derived from
	// Secret), Revocations, NodeID, Logger and Now.
	Web web.Config
}

// Deps are what a node is given rather than configured with: where its
// state lives, how it reaches the other nodes, where it logs and what time
// it is. cmd/switchboard picks them; tests inject their own.
type Deps struct {
	// Store keeps revocations, the audit log, jobs and dashboard
	// sessions. Required. The caller closes it after Shutdown.
	Store store.Store
	// Bus connects the node to the others. Nil: an in-memory bus of this
	// node alone, which Shutdown closes; a bus given here is the caller's
	// to close, after Shutdown.
	Bus cluster.Bus
	// Results holds jobs' output files. Nil: a directory at
	// Config.ResultsDir, if set.
	Results blob.Store
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time for token, code and job checks; nil
	// means time.Now. Tests use it to move time.
	Now func() time.Time
	// Middleware, if set, wraps the node's whole HTTP handler (outside the
	// request log and the limits). Tests check every request and answer
	// against the OpenAPI description with it (apispec/apispectest).
	Middleware func(http.Handler) http.Handler
}

// jobsNode is the jobs subsystem as a node wires it: the state machine,
// its UWS binding and the agent link.
type jobsNode struct {
	*jobs.Manager
	*uwsapi.API
	link *agentlink.Link
}

// Stop closes the agents' channels, then stops the state machine.
func (n *jobsNode) Stop(ctx context.Context) error {
	return errors.Join(n.link.Stop(ctx), n.Manager.Stop(ctx))
}

// outcomes returns the jobs' outcome counts for the metrics, or nil
// without a job service (n nil).
func (n *jobsNode) outcomes() func() map[string]uint64 {
	if n == nil {
		return nil
	}
	return func() map[string]uint64 {
		out := map[string]uint64{}
		for phase, count := range n.Outcomes() {
			out[string(phase)] = count
		}
		return out
	}
}

// cookieKeyInfo is the HKDF info deriving the dashboard's cookie key from
// the server secret.
const cookieKeyInfo = "switchboard session cookie"

// Server is a relay node: New builds it and takes its listeners, Start
// serves, Shutdown drains and takes everything down.
type Server struct {
	cfg       Config
	deps      Deps // Logger and Now set
	stats     *control.StatsPublisher
	metrics   *http.Server // nil without MetricsListen
	metricsLn net.Listener
	log       *slog.Logger
	relay     *relay.Server
	bus       *busNode
	ctl       *control.Handler
	enforcer  *control.Enforcer
	http      *http.Server
	ln        net.Listener
	tls       *tls.Config // nil: plain HTTP
	publicURL *url.URL
	draining  atomic.Bool
	// endLameDuck ends the lame-duck period early when closed (tests).
	endLameDuck chan struct{}
	served      chan error
	open        atomic.Int64 // connections accepted and not yet closed
	refused     *refusals    // requests refused before any handler

	jobs *jobsNode // nil without results storage
	web  *web.Handler

	// undo takes down, in reverse, what New and Start set up; it runs
	// when either fails, or at Shutdown of a server never started.
	undo         []func()
	started      bool
	shutdownOnce sync.Once
	shutdownErr  error
	stopPurge    context.CancelFunc // set by Start
	background   sync.WaitGroup     // the purger

	// practable publishes practable's stats feed; nil without Config.PractableStats.
	practable *control.PractableStatsPublisher
}

// New checks cfg, builds the node's parts over deps and takes its
// listeners (so that the public URL, derived from the listening address
// when not configured, is known to every part). Nothing serves until
// Start. A server that is never started is taken down by Shutdown.
func New(cfg Config, deps Deps) (_ *Server, err error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	switch {
	case cfg.ShutdownTimeout < 0:
		return nil, fmt.Errorf("server: shutdown timeout %v (--shutdown-timeout): must not be negative; 0 means %v", cfg.ShutdownTimeout, DefaultShutdownTimeout)
	case cfg.StatsEvery < 0:
		return nil, fmt.Errorf("server: stats interval %v (--stats-every): must not be negative; 0 means %v", cfg.StatsEvery, control.DefaultStatsEvery)
	case cfg.Leeway < 0:
		return nil, fmt.Errorf("server: leeway %v (--leeway): must not be negative", cfg.Leeway)
	case cfg.LameDuck < 0:
		return nil, fmt.Errorf("server: lame-duck period %v (--lame-duck): must not be negative", cfg.LameDuck)
	case cfg.DrainWindow < 0:
		return nil, fmt.Errorf("server: drain window %v (--drain-window): must not be negative", cfg.DrainWindow)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.DrainWindow > 0 && cfg.DrainWindow >= cfg.ShutdownTimeout {
		return nil, fmt.Errorf("server: drain window %v (--drain-window) must be shorter than the shutdown timeout %v (--shutdown-timeout), which also bounds the close handshakes", cfg.DrainWindow, cfg.ShutdownTimeout)
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("server: a secret is required")
	}
	if deps.Store == nil {
		return nil, errors.New("server: a store is required")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("server: --tls-cert and --tls-key go together")
	}
	log, now := deps.Logger, deps.Now
	limits, err := cfg.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	key, err := auth.NewHMACKey(cfg.JWTAlgorithm, cfg.Secret)
	if err != nil {
		return nil, err
	}
	rev := control.NewRevocations(now)
	revision, err := loadRevocations(deps.Store, rev, now())
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, log: log, refused: &refusals{}, served: make(chan error, 1), endLameDuck: make(chan struct{})}
	defer func() {
		if err != nil {
			s.teardown()
		}
	}()
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("server: load TLS key pair: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	// The relay, its stats and its place on the bus.
	rc := cfg.Relay
	if rc.Now == nil {
		rc.Now = now
	}
	if rc.Logger == nil {
		rc.Logger = log
	}
	s.stats = control.NewStatsPublisher(cfg.StatsEvery)
	onConnect, onClose := rc.OnConnect, rc.OnClose
	rc.OnConnect = func(cs relay.ConnStatus) {
		s.stats.Changed()
		if onConnect != nil {
			onConnect(cs)
		}
	}
	rc.OnClose = func(cs relay.ConnStatus, why relay.CloseReason) {
		s.stats.Changed()
		if onClose != nil {
			onClose(cs, why)
		}
	}
	rc.Denied = func(i *relay.Info) bool {
		_, denied := rev.Denied(i.BookingID, i.Subject, i.TokenID)
		return denied
	}
	if s.relay, err = relay.NewServer(rc); err != nil {
		return nil, err
	}
	rs := s.relay
	if s.bus, err = joinBus(cfg.NodeID, deps.Bus, rs, log); err != nil {
		return nil, err
	}
	s.undo = append(s.undo, s.bus.close)

	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("server: listen: %w", err)
	}
	s.undo = append(s.undo, func() { s.ln.Close() })
	if s.publicURL, err = publicURL(cfg.PublicURL, s.ln.Addr(), s.tls != nil); err != nil {
		return nil, err
	}
	pub := s.publicURL
	verifier := auth.NewVerifier(key, pub.String(), auth.VerifierOptions{Leeway: cfg.Leeway, Now: deps.Now})
	authn := &control.Authenticator{Verifier: verifier, Revocations: rev}
	// Codes stay in this node's memory; other nodes take them over the
	// bus, and this node takes theirs.
	codes := access.NewMemoryCodeStore(0, deps.Now)
	codeRouter, err := cluster.NewCodeRouter(cluster.CodeRouterConfig{Bus: s.bus.bus, Codes: codes, Logger: log})
	if err != nil {
		return nil, err
	}
	s.bus.codes = codeRouter // closed with the bus
	// Every node's summary over the bus: /status?node=all, the dashboard,
	// and once another node has been seen the stats topic's cluster
	// section, republished at once when a member comes or goes.
	if s.bus.status, err = control.NewClusterStatus(control.ClusterConfig{Bus: s.bus.bus, Relay: rs, Peers: s.bus.peers,
		BusHealth: s.bus.busHealth, State: s.nodeState, OnMembers: s.stats.Changed, Version: buildinfo.Version(), Now: deps.Now}); err != nil {
		return nil, err
	}
	s.stats.PublishCluster(s.bus.status)

	// Jobs, when results have somewhere to go.
	systemTopics := map[string]string{control.StatsTopic: auth.ScopeStats, control.SummaryTopic: auth.ScopeStats, control.ChangesTopic: auth.ScopeStats}
	systemPrefixes := map[string]string{}
	var closers []control.ConnCloser
	if deps.Results != nil || cfg.ResultsDir != "" {
		if s.jobs, err = newJobsNode(cfg, deps, rs, s.bus.bus, rev, authn); err != nil {
			return nil, err
		}
		systemTopics[jobs.AgentsTopic] = auth.ScopeStats
		systemPrefixes[jobs.LogTopicPrefix] = auth.ScopeJobsAdmin
		closers = append(closers, s.jobs.link)
	}

	// The access endpoints: sessions, shells and, with jobs, agents.
	ah, err := access.New(access.Config{
		PublicURL: pub, NodeID: cfg.NodeID, Verifier: verifier, Relay: rs, Codes: codes,
		CodeTTL: cfg.CodeTTL, AllowedOrigins: cfg.AllowedOrigins, Logger: log, Now: deps.Now,
		RemoteCodes: codeRouter, Placement: codeRouter, Denier: rev, TrustedProxies: cfg.TrustedProxies,
		SystemTopics: systemTopics, SystemPrefixes: systemPrefixes,
		Coalesce: cfg.Coalesce, PractableStats: s.practableStats(cfg),
		MaxConnsPerToken: limits.ConnsPerToken, MaxConnsPerSubject: limits.ConnsPerSubject, PublishLimits: limits.Publish,
		SSEHeartbeat: cfg.SSEHeartbeat,
	})
	if err != nil {
		return nil, err
	}
	sh, err := shell.New(shell.Config{Access: ah, Relay: rs, AnswerTimeout: cfg.ShellAnswerTimeout, Logger: log})
	if err == nil {
		err = ah.Handle(wire.PrefixShell, sh)
	}
	if err == nil && s.jobs != nil {
		var al *agentlink.Endpoint
		if al, err = agentlink.New(s.jobs.link); err == nil {
			err = ah.Handle(wire.PrefixAgent, al)
		}
	}
	if err != nil {
		return nil, err
	}

	// The dashboard: its cookie key is derived from the secret, so every
	// node of a cluster (same secret) opens every node's cookies, while
	// cookies and tokens never share a key.
	mux := http.NewServeMux()
	cookieKey, err := hkdf.Key(sha256.New, cfg.Secret, nil, cookieKeyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("server: derive the cookie key: %w", err)
	}
	wc := cfg.Web
	wc.PublicURL, wc.Key, wc.Verifier, wc.Store, wc.Relay, wc.API = pub, key, verifier, deps.Store, rs, mux
	wc.CookieKey, wc.Revocations, wc.NodeID, wc.Logger, wc.Now = cookieKey, rev, cfg.NodeID, log, deps.Now
	if s.web, err = web.New(wc); err != nil {
		return nil, err
	}
	closers = append(closers, sh)    // shell sessions waiting for their host
	closers = append(closers, s.web) // dashboard sessions: a revoked subject's end at once
	var jobsAPI *uwsapi.API
	if s.jobs != nil {
		jobsAPI = s.jobs.API
	}
	// Revocations: recorded by s.ctl, enforced here and on every other
	// node through the bus.
	enforcer, err := control.NewEnforcer(control.EnforcerConfig{Revocations: rev, Relay: rs, Codes: codes,
		Closers: closers, Bus: s.bus.bus, Log: deps.Store, Revision: revision, PollEvery: cfg.RevocationPoll, Logger: log})
	if err != nil {
		return nil, err
	}
	s.enforcer = enforcer
	s.undo = append(s.undo, enforcer.Close)
	s.ctl, err = control.New(control.Config{
		Store: deps.Store, Relay: rs, Revocations: rev, Enforcer: enforcer, Verifier: verifier, Key: key,
		Audience: pub.String(), MaxTokenTTL: cfg.MaxTokenTTL, MaxRefreshLifetime: cfg.MaxRefreshLifetime,
		Access: ah, Logger: log, Now: deps.Now, Refusals: refusalCounts(s.refused, jobsAPI), Cluster: s.bus.status,
		JobOutcomes: s.jobs.outcomes(),
	})
	if err != nil {
		return nil, err
	}
	if cfg.MetricsListen != "" {
		if s.metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("server: metrics listen: %w", err)
		}
		s.undo = append(s.undo, func() { s.metricsLn.Close() })
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", s.ctl.Metrics())
		s.metrics = &http.Server{Handler: mm, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 32 << 10,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	}

	// Routes, then the HTTP server around them.
	ah.Register(mux) // access, websockets and HTTP publish (docs/protocol.md)
	s.ctl.Register(mux)
	if jobsAPI != nil {
		jobsAPI.Register(mux, pub.String())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		apierr.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": cfg.NodeID, "version": buildinfo.Version()})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			apierr.WriteNew(w, http.StatusServiceUnavailable, wire.ErrorDraining, "server is shutting down")
			return
		}
		if !s.bus.joinedCluster() {
			apierr.WriteNew(w, http.StatusServiceUnavailable, wire.ErrorJoining, "joining the cluster: not every node knows what the others' readers read yet")
			return
		}
		apierr.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET "+apispec.Path, apispec.Handler()) // the OpenAPI description of these routes (docs/api.md)
	s.web.Register(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// This pattern matches every method, so the router never answers
		// 405 itself: a known path asked with another method lands here.
		if allow := allowedMethods(mux, r, ah.KnownPrefix); allow != "" {
			w.Header().Set("Allow", allow)
			apierr.WriteNew(w, http.StatusMethodNotAllowed, wire.ErrorMethodNotAllowed, "method "+truncateASCII(r.Method, 16)+" not allowed here; allowed: "+allow)
			return
		}
		apierr.WriteNew(w, http.StatusNotFound, wire.ErrorNotFound, "no such endpoint")
	})
	if err := checkConnectionRoutes(mux, ah.KnownPrefix); err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler: logRequests(log, nodeHeader(cfg.NodeID, rejectUncleanPaths(limitRequests(
			ratelimit.New[netip.Addr](limits.RequestsPerSecond, limits.RequestBurst, now), &s.open, fdBudget(limits.FDReserve),
			cfg.TrustedProxies, s.refused, routeErrors(mux, ah.KnownPrefix, ah.ServePath))))),
		TLSConfig:         s.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       requestTimeout(cfg.RequestTimeout), // where each request starts:
		WriteTimeout:      requestTimeout(cfg.RequestTimeout), // long ones move it (requestTimeout)
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if deps.Middleware != nil {
		s.http.Handler = deps.Middleware(s.http.Handler)
	}
	return s, nil
}

// newJobsNode builds the jobs state machine over deps and the node's bus
// (job events), its UWS binding and the agent link (agents' presence and
// commands over the bus).
func newJobsNode(cfg Config, deps Deps, rs *relay.Server, bus cluster.Bus, rev *control.Revocations, authn *control.Authenticator) (*jobsNode, error) {
	jc := cfg.Jobs
	jc.Bus = bus
	jc.Store, jc.Blobs, jc.ResultsDir, jc.NodeID, jc.Publisher = deps.Store, deps.Results, cfg.ResultsDir, cfg.NodeID, rs
	jc.Logger, jc.Now = deps.Logger, deps.Now
	jm, err := jobs.New(jc)
	if err != nil {
		return nil, err
	}
	// The jobs API alone also takes an API token as the password of HTTP
	// Basic credentials (UWS clients such as TOPCAT, curl -u).
	api, err := uwsapi.New(uwsapi.Config{Jobs: jm, Logger: deps.Logger, Authenticate: authn.AuthenticateBearerOrBasic,
		BasicRealm: "switchboard jobs"})
	if err != nil {
		return nil, err
	}
	link, err := agentlink.NewLink(jm, agentlink.LinkConfig{Denier: rev, Bus: bus})
	if err != nil {
		return nil, err
	}
	return &jobsNode{Manager: jm, API: api, link: link}, nil
}

// Start serves in the background until Shutdown: the jobs manager (which
// loads the jobs in flight), the metrics listener, the HTTP server, the
// stats publisher and the purgers. If a step fails, Start takes the whole
// server down and returns the error; call it once.
func (s *Server) Start() (err error) {
	if s.started {
		return errors.New("server: already started")
	}
	s.started = true
	defer func() {
		if err != nil {
			s.teardown()
		}
	}()
	if s.jobs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.jobs.Manager.Start(ctx, s.jobs.link)
		cancel()
		if err != nil {
			return err
		}
		s.undo = append(s.undo, func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
			defer cancel()
			s.jobs.Stop(ctx)
		})
	}
	if s.metrics != nil {
		s.undo = append(s.undo, func() { s.metrics.Close() })
		go s.metrics.Serve(s.metricsLn)
	}
	go func() {
		// TLS is terminated beneath the JSON rewriting of net/http's own
		// errors (so HTTP/1.1 only: the relay and the API need no HTTP/2).
		served := serverListener{Listener: s.ln, handshakeTimeout: 10 * time.Second, open: &s.open,
			acceptErrors: &acceptErrorLog{log: s.log, interval: 10 * time.Second}}
		if s.tls != nil {
			served.Listener = tls.NewListener(s.ln, s.tls)
		}
		err := s.http.Serve(served)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.served <- err
	}()
	s.stats.Start(s.relay)
	if s.practable != nil {
		s.practable.Start(s.relay)
	}
	purgeCtx, stopPurge := context.WithCancel(context.Background())
	s.stopPurge = stopPurge
	s.background.Add(1)
	go func() { defer s.background.Done(); s.ctl.RunPurger(purgeCtx) }()
	s.background.Add(1)
	go func() { defer s.background.Done(); s.enforcer.Run(purgeCtx) }() // revocation catch-up
	s.web.Start(purgeCtx)
	s.log.Info("serving", "addr", s.ln.Addr().String(), "public_url", s.publicURL.String(), "node", s.cfg.NodeID)
	return nil
}

// teardown runs the undo steps in reverse, once.
func (s *Server) teardown() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		s.undo[i]()
	}
	s.undo = nil
}

// loadRevocations fills rev from the store at start and returns the
// revision it was loaded at.
func loadRevocations(st store.Store, rev *control.Revocations, now time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	revision, err := control.LoadRevocations(ctx, st, rev, now)
	if err != nil {
		return 0, fmt.Errorf("server: %w", err)
	}
	return revision, nil
}

// MetricsAddr returns the address of the metrics listener, or nil.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// publicURL returns the configured public URL, or one derived from the
// listening address.
func publicURL(configured string, addr net.Addr, useTLS bool) (*url.URL, error) {
	if configured == "" {
		scheme := "http"
		if useTLS {
			scheme = "https"
		}
		host, port, _ := net.SplitHostPort(addr.String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		configured = scheme + "://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(configured)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("server: public URL %q: want http(s)://host[:port][/path]", configured)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// PublicURL returns the server's public base URL.
func (s *Server) PublicURL() string { return s.publicURL.String() }

// Relay returns the relay core.
func (s *Server) Relay() *relay.Server { return s.relay }

// Dashboard returns the web dashboard's handler (login links, providers).
func (s *Server) Dashboard() *web.Handler { return s.web }

// Done returns a channel that receives the serve loop's error when it ends.
func (s *Server) Done() <-chan error { return s.served }

// Shutdown fails /readyz for the lame-duck period, then stops accepting
// requests, closes every relay connection with 1001 (spread over the drain
// window) and waits for them, within ctx and the configured shutdown
// timeout.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.bus.leave() // new codes are placed on the nodes that stay
	// Answers from now on close their connection: a load balancer that
	// reuses idle connections has none left to this node when it stops
	// accepting, so no request is sent on one that is closing (a 502).
	s.http.SetKeepAlivesEnabled(false)
	if !s.started {
		s.teardown()
		return nil
	}
	// Lame duck: /readyz fails while everything still works, until the
	// load balancer has noticed (or the caller's ctx ends).
	if s.cfg.LameDuck > 0 {
		s.log.Info("lame duck: /readyz fails; serving on", "for", s.cfg.LameDuck)
		t := time.NewTimer(s.cfg.LameDuck)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		case <-s.endLameDuck:
			t.Stop()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	// HTTP and relay drain side by side: a slow request must not use up
	// the time the websockets need for their 1001 close frames. The
	// listener closes at once; hijacked websockets are the relay's, closed
	// over the drain window.
	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Shutdown(ctx) }()
	jobsDone := make(chan error, 1)
	go func() {
		if s.jobs != nil {
			jobsDone <- s.jobs.Stop(ctx)
			return
		}
		jobsDone <- nil
	}()
	relayErr := s.relay.Drain(ctx, s.cfg.DrainWindow)
	s.bus.close()
	httpErr := <-httpDone
	if err := <-jobsDone; err != nil {
		s.log.Warn("jobs: stop", "err", err)
	}
	s.stats.Stop()
	if s.practable != nil {
		s.practable.Stop()
	}
	s.stopPurge()
	s.background.Wait()
	s.web.Stop()
	if s.metrics != nil {
		s.metrics.Shutdown(ctx)
	}
	if httpErr != nil && !errors.Is(httpErr, context.DeadlineExceeded) {
		return httpErr
	}
	if relayErr != nil {
		s.http.Close()
		return fmt.Errorf("server: shutdown: %w", relayErr)
	}
	return nil
}

// nodeHeader names the node on every response (wire.HeaderNode).
func nodeHeader(nodeID string, next http.Handler) http.Handler {
	id := []string{nodeID} // shared: header values are never modified
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()[wire.HeaderNode] = id
		next.ServeHTTP(w, r)
	})
}

// rejectUncleanPaths answers 400 to paths with empty, "." or ".." segments.
// http.ServeMux would redirect them, which turns a POST with a malformed
// topic into a confusing 301.
func rejectUncleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
			strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") {
			apierr.WriteNew(w, http.StatusBadRequest, wire.ErrorInvalidPath, "path has an empty, . or .. segment")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// allowedMethods returns the methods, comma-separated, that mux serves r's
// path with through a pattern other than the catch-all "/" (and other than
// the access endpoints' pattern, unless the path's first segment is a
// connection type), or "".
func allowedMethods(mux *http.ServeMux, r *http.Request, isAccessPrefix func(string) bool) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	accessPath := isAccessPrefix(first)
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := *r // shallow: only the method differs, and Handler only reads
		probe.Method = m
		h, pattern := mux.Handler(&probe)
		if pattern == "" || pattern == "/" || reflect.TypeOf(h) == redirectHandlerType {
			continue
		}
		if !accessPath && strings.HasSuffix(pattern, " "+access.RoutePath) {
			continue
		}
		allow = append(allow, m)
	}
	return strings.Join(allow, ", ")
}

// redirectHandlerType is the type of the handler ServeMux.Handler returns
// when it would redirect to a canonical path (e.g. add a trailing slash):
// that method is not served at this path.
var redirectHandlerType = reflect.TypeOf(http.RedirectHandler("/", http.StatusMovedPermanently))

// truncateASCII shortens s to at most n bytes of printable ASCII, for
// echoing client input in an error message.
func truncateASCII(s string, n int) string {
	b := make([]byte, 0, min(len(s), n))
	for i := 0; i < len(s) && len(b) < n; i++ {
		if c := s[i]; c > ' ' && c < 0x7f {
			b = append(b, c)
		}
	}
	return string(b)
}

// statusWriter records the status code of a response for logging.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs each request at debug level. It logs the path only: the
// query string may hold a one-time code, the headers a token. Unless debug
// lines are kept, it reads no clock and builds no line.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		debug := log.Enabled(r.Context(), slog.LevelDebug)
		var start time.Time
		if debug {
			start = time.Now()
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
				if sw.status == 0 {
					apierr.WriteNew(sw, http.StatusInternalServerError, "internal", "internal error")
				}
			}
			if debug {
				log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
					"duration", time.Since(start), "remote", r.RemoteAddr)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}
