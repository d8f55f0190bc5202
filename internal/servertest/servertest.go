// Package servertest is the one test harness for a whole Switchboard node:
// Start runs a real server (server.New and Start on 127.0.0.1:0, a
// temporary data directory, SQLite, a results directory, the in-memory bus)
// and takes it down when the test ends; Token and Sign mint tokens for it;
// Dial does what a client does (pkg/client's Dial: the one-step connect).
// Waiting for a condition is wait.For in the leaf package servertest/wait,
// which the internal tests of packages below server (relay, server itself,
// jobs/agentlink) can import without an import cycle.
//
// Only tests and other test-support packages import servertest
// (internal/archtest checks it). The server package's own internal tests
// keep a harness of their own: importing servertest would be a cycle.
package servertest

import (
	"cmp"
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/apispec/apispectest"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Secret is the token secret of every server Start runs (HS256).
var Secret = []byte("servertest secret of 32 bytes...")

// TokenTTL is the lifetime of the tokens Claims describes.
const TokenTTL = time.Hour

// shutdownTimeout bounds the server's shutdown when a test ends.
const shutdownTimeout = 10 * time.Second

// Server is a running node and what a test needs to talk to it.
type Server struct {
	*server.Server
	// URL is the node's public base URL, the audience of its tokens.
	URL string
	// DataDir is the node's temporary data directory (the SQLite file and
	// the results directory are in it).
	DataDir string
	// Config and Deps are what the node was started with.
	Config server.Config
	Deps   server.Deps
	// Clock is the node's clock (Deps.Now unless a configure function
	// replaced it): real time plus an offset the test can move.
	Clock *Clock

	key *auth.Key
}

// Clock is real time plus an offset that only moves forward when the test
// says so; it lets a test expire tokens, codes and sessions without
// sleeping. Safe for concurrent use.
type Clock struct{ offset atomic.Int64 }

// Now is time.Now plus the offset.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock d forward.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// Start runs a node configured as `switchboard serve` would by default on a
// fresh data directory, then by each configure function in turn (which may
// set Deps.Store to use another store, or clear Config.ResultsDir to run
// without the jobs API), and shuts it down when the test ends.
func Start(t testing.TB, configure ...func(*server.Config, *server.Deps)) *Server {
	t.Helper()
	dir := t.TempDir()
	clock := &Clock{}
	cfg := server.Config{Listen: "127.0.0.1:0", Secret: Secret, NodeID: "n1", ResultsDir: filepath.Join(dir, "results")}
	// Every request and answer is checked against the OpenAPI description
	// (a configure function may replace or clear the middleware).
	deps := server.Deps{Now: clock.Now, Middleware: apispectest.New(t).Middleware}
	for _, f := range configure {
		f(&cfg, &deps)
	}
	if deps.Store == nil {
		db, err := sqlite.Open(context.Background(), filepath.Join(dir, "switchboard.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() }) // after the shutdown below (cleanups run last first)
		deps.Store = db
	}
	srv := start(t, cfg, deps)
	key, err := auth.NewHMACKey(cmp.Or(cfg.JWTAlgorithm, "HS256"), cfg.Secret)
	if err != nil {
		t.Fatal(err)
	}
	return &Server{Server: srv, URL: srv.PublicURL(), DataDir: dir, Config: cfg, Deps: deps, Clock: clock, key: key}
}

// start is the one place that constructs and starts a node, so a change
// in how the server package does that is a change here only.
func start(t testing.TB, cfg server.Config, deps server.Deps) *server.Server {
	t.Helper()
	srv, err := server.New(cfg, deps)
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		t.Fatalf("servertest: start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("servertest: shutdown: %v", err)
		}
	})
	return srv
}

// Claims describes a session token for topic with scopes, for this node
// (its URL as the audience), valid from now on the node's clock for
// TokenTTL. Change fields (Prefix, Subject, ExpiresAt…) before Sign.
func (s *Server) Claims(topic string, scopes ...string) auth.Claims {
	now := s.Clock.Now()
	return auth.Claims{
		Topic: topic, Prefix: wire.PrefixSession, Scopes: scopes,
		RegisteredClaims: jwt.RegisteredClaims{
			Audience:  jwt.ClaimStrings{s.URL},
			ExpiresAt: jwt.NewNumericDate(now.Add(TokenTTL)),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
		},
	}
}

// Sign signs c with the node's secret.
func (s *Server) Sign(t testing.TB, c auth.Claims) string {
	t.Helper()
	tok, err := s.key.Sign(c)
	if err != nil {
		t.Fatalf("servertest: sign: %v", err)
	}
	return tok
}

// Token is a signed session token for topic with scopes (see Claims).
func (s *Server) Token(t testing.TB, topic string, scopes ...string) string {
	t.Helper()
	return s.Sign(t, s.Claims(topic, scopes...))
}

// Dial connects to topic as a session client with a token carrying scopes,
// as pkg/client's Dial does: in one step, the token in the websocket
// handshake. The connection is closed when the test ends.
func (s *Server) Dial(t testing.TB, topic string, scopes ...string) *client.Conn {
	t.Helper()
	return s.DialToken(t, topic, s.Token(t, topic, scopes...))
}

// DialToken is Dial with a given token.
func (s *Server) DialToken(t testing.TB, topic, token string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.URL, topic, token, nil)
	if err != nil {
		t.Fatalf("servertest: dial %s: %v", topic, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TopicConns counts the relay's connections on topic.
func (s *Server) TopicConns(topic string) int {
	n := 0
	for _, c := range s.Relay().Connections() {
		if c.Info.Topic == topic {
			n++
		}
	}
	return n
}
