// Package pgtest gives tests a real PostgreSQL database.
//
// Start returns the URL of a fresh, empty database. If
// SWITCHBOARD_TEST_POSTGRES_URL is set, the database is created in that
// server; otherwise pgtest runs a throwaway cluster of its own (initdb and
// pg_ctl into a temporary directory, listening on a free loopback port),
// shared by the tests of one test binary. Call Main from TestMain so the
// cluster is started once and stopped after the last test; without it the
// cluster is stopped when the last test using it ends, and started again
// for the next.
//
// StartCluster runs a dedicated cluster that a test can stop and start.
//
// The cluster is package pgtemp's: the binaries are looked up on PATH, then
// under /usr/lib/postgresql/*/bin (Debian). Without them the test is
// skipped, or fails if SWITCHBOARD_TEST_STRICT=1. initdb and postgres refuse
// to run as root, so when the test runs as root they run as the "postgres"
// user.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchboard-hub/switchboard/internal/store/pgtemp"
)

// Environment variables read by pgtest.
const (
	EnvURL    = "SWITCHBOARD_TEST_POSTGRES_URL" // an existing server to create databases in
	EnvStrict = "SWITCHBOARD_TEST_STRICT"       // "1": fail instead of skipping when PostgreSQL is missing
)

// errMissing marks errors that skip a test (unless strict): PostgreSQL is
// not installed, or cannot be run here.
var errMissing = errors.New("pgtest: PostgreSQL cannot run here")

var (
	mainActive atomic.Bool
	shared     struct {
		mu    sync.Mutex
		c     *Cluster
		users int // tests using c, when Main is not active
	}
)

// Main runs the tests and then stops the shared cluster. Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	mainActive.Store(true)
	code := m.Run()
	shared.mu.Lock()
	if shared.c != nil {
		if err := shared.c.destroy(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		shared.c = nil
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// Start returns the URL of a new, empty database, dropped when the test
// ends.
func Start(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return createDatabase(t, u)
	}
	c := sharedCluster(t)
	return c.NewDatabase(t)
}

func sharedCluster(t testing.TB) *Cluster {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c == nil {
		c, err := newCluster()
		if err != nil {
			skipOrFatal(t, err)
		}
		shared.c = c
	}
	c := shared.c
	if !mainActive.Load() {
		shared.users++
		t.Cleanup(func() {
			shared.mu.Lock()
			defer shared.mu.Unlock()
			if shared.users--; shared.users == 0 && shared.c == c {
				if err := c.destroy(); err != nil {
					t.Error(err)
				}
				shared.c = nil
			}
		})
	}
	return c
}

func skipOrFatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errMissing) && os.Getenv(EnvStrict) != "1" {
		t.Skip(err.Error() + " (set " + EnvStrict + "=1 to fail instead)")
	}
	t.Fatal(err)
}

// Cluster is a PostgreSQL cluster in a temporary directory (see package
// pgtemp), listening on 127.0.0.1 and a unix socket in that directory, with
// trust authentication for the superuser "postgres". URL, Stop and Start
// are pgtemp's.
type Cluster struct {
	*pgtemp.Cluster
}

// newCluster runs initdb and starts the server.
func newCluster() (*Cluster, error) {
	c, err := pgtemp.New()
	if err != nil {
		if errors.Is(err, pgtemp.ErrMissing) {
			err = fmt.Errorf("%w: %w (or set %s)", errMissing, err, EnvURL)
		}
		return nil, err
	}
	return &Cluster{c}, nil
}

func (c *Cluster) destroy() error { return c.Destroy() }

// StartCluster starts a cluster for this test alone; it is removed when the
// test ends. Use it to stop and start the server under a store.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := newCluster()
	if err != nil {
		skipOrFatal(t, err)
	}
	t.Cleanup(func() {
		if err := c.destroy(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// NewDatabase creates an empty database in the cluster and returns its URL;
// it is dropped when the test ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	return createDatabase(t, c.URL())
}

// createDatabase creates a database with a random name in the server at
// serverURL and returns its URL; it is dropped when the test ends.
func createDatabase(t testing.TB, serverURL string) string {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("pgtest: bad server URL: %v", err)
	}
	var b [8]byte
	rand.Read(b[:])
	name := "switchboard_test_" + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", redact(u), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	db := *u
	db.Path = "/" + name
	db.RawPath = ""
	return db.String()
}

func redact(u *url.URL) string { return u.Redacted() }
