package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/control"
)

// TestConnectionsAPIAndChangesTopic: GET /api/v1/connections answers a
// page of the node's connections to relay:stats (checked against the
// OpenAPI description by the harness), sorted and filtered; the system
// topic stats/changes gives a relay:stats reader a notice within a second
// of a connect, and is refused without relay:stats.
func TestConnectionsAPIAndChangesTopic(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.StatsEvery = time.Hour })
	statsTok := s.token(control.ChangesTopic, "read", auth.ScopeStats)
	changes := s.dial(control.ChangesTopic, statsTok)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	start := time.Now()
	s.dial("lab/a", s.bookingToken("lab/a", "bk-a", "read"))
	var notice control.ChangeNotice
	for notice.Connections != 2 {
		_, data, err := changes.Read(ctx)
		if err != nil {
			t.Fatalf("no notice of the connect: %v", err)
		}
		if err := json.Unmarshal(data, &notice); err != nil {
			t.Fatalf("notice %s: %v", data, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("connect noticed after %v, want within a second", d)
	}
	s.dial("lab/b", s.bookingToken("lab/b", "bk-b", "read"))

	st, b := s.api("GET", "/api/v1/connections?q=lab/&sort=booking&dir=desc", s.token("", auth.ScopeStats), "")
	var page control.ConnectionsPage
	if st != 200 || json.Unmarshal(b, &page) != nil {
		t.Fatalf("connections: %d %s", st, b)
	}
	var bookings []string
	for _, r := range page.Rows {
		bookings = append(bookings, r.BookingID)
	}
	if page.Total != 3 || page.Matched != 2 || !slices.Equal(bookings, []string{"bk-b", "bk-a"}) || len(page.IDs) != 2 {
		t.Errorf("total %d matched %d bookings %v ids %v, want 3, 2, [bk-b bk-a]", page.Total, page.Matched, bookings, page.IDs)
	}
	st, b = s.api("GET", "/api/v1/connections?since="+page.Cursor+"&q=lab/&sort=booking&dir=desc", s.token("", auth.ScopeStats), "")
	if st != 200 || json.Unmarshal(b, &page) != nil || len(page.IDs) != 2 || len(page.Rows) != 0 {
		t.Errorf("nothing changed since the cursor: %d %s", st, b)
	}

	for _, c := range []struct {
		query, tok string
		status     int
		code       string
	}{
		{"", s.token("", "read"), http.StatusForbidden, "scope_forbidden"},
		{"", "", http.StatusUnauthorized, "missing_token"},
		{"?sort=colour", s.token("", auth.ScopeStats), http.StatusBadRequest, "invalid_sort"},
	} {
		if st, b := s.api("GET", "/api/v1/connections"+c.query, c.tok, ""); st != c.status || errCode(b) != c.code {
			t.Errorf("%q: %d %s, want %d %s", c.query, st, b, c.status, c.code)
		}
	}

	// Reading the notices needs relay:stats.
	req, _ := http.NewRequest("POST", s.url+"/session/"+control.ChangesTopic, nil)
	req.Header.Set("Authorization", s.token(control.ChangesTopic, "read"))
	if st, code, _ := do(t, req); st != http.StatusForbidden || code != "scope_forbidden" {
		t.Errorf("%s without relay:stats: %d %s", control.ChangesTopic, st, code)
	}
}
