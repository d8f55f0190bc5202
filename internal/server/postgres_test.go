package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
	"github.com/switchboard-hub/switchboard/internal/store/postgres"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestDatabaseDown: with PostgreSQL stopped, changes answer 503 and change
// nothing, relay traffic and new connections carry on, and everything works
// again once the database is back.
func TestDatabaseDown(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := postgres.Open(ctx, cluster.NewDatabase(t), postgres.Options{ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := startServer(t, func(c *Config, d *Deps) { d.Store = db })
	admin := s.adminToken()
	w := s.dial("lab", s.bookingToken("lab", "b1", "write"))
	r := s.dial("lab", s.bookingToken("lab", "b1", "read"))
	wait.For(t, "connections", func() bool { return s.Relay().Stats().Connections == 2 })

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	if st, b := s.api("POST", "/bids/deny?bid=b1&exp="+future(s, time.Hour), admin, ""); st != 503 || errCode(b) != "store_unavailable" {
		t.Fatalf("deny with the database down: %d %s", st, b)
	}
	if st, b := s.api("POST", "/api/v1/tokens", admin, `{"topic":"lab","scopes":["read"],"ttl":"1h"}`); st != 503 {
		t.Fatalf("mint with the database down: %d %s", st, b) // no unaudited token is handed out
	}
	if st, b := s.api("GET", "/api/v1/audit", admin, ""); st != 503 {
		t.Fatalf("audit with the database down: %d %s", st, b)
	}
	// Nothing changed: the booking is not denied, traffic flows, new
	// connections are admitted.
	w.Write(ctx, client.Text, []byte("during the outage"))
	if _, data, err := r.Read(ctx); err != nil || string(data) != "during the outage" {
		t.Fatalf("relay during the outage: %q %v", data, err)
	}
	late := s.dial("lab", s.bookingToken("lab", "b1", "read"))

	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "database back", func() bool {
		st, _ := s.api("POST", "/bids/deny?bid=b1&exp="+future(s, time.Hour), admin, "")
		return st == 204
	})
	for _, c := range []*client.Conn{w, r, late} {
		expectClose(t, c, 4003)
	}
	_, b := s.api("GET", "/api/v1/audit", admin, "")
	if errCode(b) != "" || !strings.Contains(string(b), `"action":"deny"`) {
		t.Fatalf("audit after recovery: %s", b)
	}
}
