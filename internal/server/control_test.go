package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// api sends an API request with tok and returns the status and body.
func (s *testServer) api(method, path, tok, body string) (int, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	req.Header.Set("Accept", "application/json") // the jobs API answers UWS XML by default
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 && !json.Valid(b) {
		s.t.Fatalf("%s %s: status %d without a JSON body: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, b
}

func errCode(b []byte) string {
	var e apiError
	json.Unmarshal(b, &e)
	return e.Error.Code
}

func (s *testServer) adminToken() string {
	c := s.claims("", auth.ScopeAdmin)
	c.Subject, c.Prefix, c.BookingID = "operator", "", ""
	return s.sign(c)
}

func (s *testServer) bookingToken(topic, booking string, scopes ...string) string {
	c := s.claims(topic, scopes...)
	c.BookingID = booking
	return s.sign(c)
}

func future(s *testServer, d time.Duration) string {
	return fmt.Sprint(s.clock.Now().Add(d).Unix())
}

func TestDenyAllow(t *testing.T) {
	s := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := s.adminToken()
	denied := []*client.Conn{
		s.dial("lab", s.bookingToken("lab", "b1", "read", "write")),
		s.dial("lab2", s.bookingToken("lab2", "b1", "read")),
	}
	other := s.dial("lab", s.bookingToken("lab", "b2", "read"))
	wait.For(t, "connections", func() bool { return s.Relay().Stats().Connections == 3 })
	pending := s.access("lab", s.bookingToken("lab", "b1", "read")) // a code issued before the denial

	start := time.Now()
	if st, b := s.api("POST", "/bids/deny?bid=b1&exp="+future(s, time.Hour), admin, ""); st != 204 {
		t.Fatalf("deny: %d %s", st, b)
	}
	for _, c := range denied {
		expectClose(t, c, 4003)
	}
	t.Logf("deny to both closes: %v", time.Since(start))
	if st, code := wsStatus(t, pending, nil); st != 401 || code != "code_invalid" {
		t.Fatalf("pending code after deny: %d %s", st, code)
	}
	// New access with the booking is refused.
	req, _ := http.NewRequest("POST", s.url+"/session/lab", nil)
	req.Header.Set("Authorization", s.bookingToken("lab", "b1", "read"))
	if st, code, _ := do(t, req); st != 403 || code != "booking_denied" {
		t.Fatalf("access after deny: %d %s", st, code)
	}
	if _, b := s.api("GET", "/bids/deny", admin, ""); !strings.Contains(string(b), `"booking_ids":["b1"]`) {
		t.Fatalf("deny list: %s", b)
	}
	// The other booking is untouched.
	w := s.dial("lab", s.bookingToken("lab", "b2", "write"))
	wait.For(t, "writer", func() bool { return s.Relay().Stats().Connections == 2 })
	w.Write(ctx, client.Text, []byte("still here"))
	if _, data, err := other.Read(ctx); err != nil || string(data) != "still here" {
		t.Fatalf("other booking: %q %v", data, err)
	}

	// Allow again: the same booking reconnects (practable's failure case).
	if st, b := s.api("POST", "/bids/allow?bid=b1&exp="+future(s, time.Hour), admin, ""); st != 204 {
		t.Fatalf("allow: %d %s", st, b)
	}
	if _, b := s.api("GET", "/bids/allow", admin, ""); !strings.Contains(string(b), `"booking_ids":["b1"]`) {
		t.Fatalf("allow list: %s", b)
	}
	if _, b := s.api("GET", "/bids/deny", admin, ""); !strings.Contains(string(b), `"booking_ids":[]`) {
		t.Fatalf("deny list after allow: %s", b)
	}
	again := s.dial("lab", s.bookingToken("lab", "b1", "read"))
	wait.For(t, "reconnected", func() bool { return s.Relay().Stats().Connections == 3 })
	w.Write(ctx, client.Text, []byte("welcome back"))
	if _, data, err := again.Read(ctx); err != nil || string(data) != "welcome back" {
		t.Fatalf("after allow: %q %v", data, err)
	}
	// Deny again, idempotently.
	for range 2 {
		if st, _ := s.api("POST", "/bids/deny?bid=b1&exp="+future(s, time.Hour), admin, ""); st != 204 {
			t.Fatalf("repeated deny: %d", st)
		}
	}
	expectClose(t, again, 4003)
}

func TestDenialSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s1 := startServer(t, func(c *Config, d *Deps) { d.Store = openStore(t, dir) })
	if st, b := s1.api("POST", "/bids/deny?bid=b9&exp="+future(s1, time.Hour), s1.adminToken(), ""); st != 204 {
		t.Fatalf("deny: %d %s", st, b)
	}
	if err := s1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s1.deps.Store.Close()
	s2 := startServer(t, func(c *Config, d *Deps) { d.Store = openStore(t, dir) })
	req, _ := http.NewRequest("POST", s2.url+"/session/lab", nil)
	c := s2.claims("lab", "read")
	c.BookingID = "b9"
	req.Header.Set("Authorization", s2.sign(c))
	if st, code, _ := do(t, req); st != 403 || code != "booking_denied" {
		t.Fatalf("after restart: %d %s", st, code)
	}
}

func TestControlBadInput(t *testing.T) {
	s := startServer(t, nil)
	admin := s.adminToken()
	reader := s.token("lab", "read")
	past := fmt.Sprint(s.clock.Now().Add(-time.Hour).Unix())
	cases := []struct {
		name, method, path, tok, body string
		status                        int
		code                          string
	}{
		{"deny without token", "POST", "/bids/deny?bid=b&exp=" + future(s, time.Hour), "", "", 401, "missing_token"},
		{"deny with read token", "POST", "/bids/deny?bid=b&exp=" + future(s, time.Hour), reader, "", 403, "scope_forbidden"},
		{"deny without bid", "POST", "/bids/deny?exp=" + future(s, time.Hour), admin, "", 400, "invalid_bid"},
		{"deny without exp", "POST", "/bids/deny?bid=b", admin, "", 400, "invalid_exp"},
		{"deny with non-numeric exp", "POST", "/bids/deny?bid=b&exp=tomorrow", admin, "", 400, "invalid_exp"},
		{"deny with past exp", "POST", "/bids/deny?bid=b&exp=" + past, admin, "", 400, "invalid_exp"},
		{"deny with control characters", "POST", "/bids/deny?bid=a%0Ab&exp=" + future(s, time.Hour), admin, "", 400, "invalid_bid"},
		{"allow with past exp", "POST", "/bids/allow?bid=b&exp=" + past, admin, "", 400, "invalid_exp"},
		{"list without admin", "GET", "/bids/deny", reader, "", 403, "scope_forbidden"},
		{"revocation unknown field", "POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"x","ttl":"1h","colour":"red"}`, 400, "invalid_json"},
		{"revocation bad kind", "POST", "/api/v1/revocations", admin, `{"kind":"planet","value":"x","ttl":"1h"}`, 400, "invalid_kind"},
		{"revocation no expiry", "POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"x"}`, 400, "invalid_expiry"},
		{"revocation both expiries", "POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"x","ttl":"1h","expires_at":"2999-01-01T00:00:00Z"}`, 400, "invalid_expiry"},
		{"revocation bad ttl", "POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"x","ttl":"soon"}`, 400, "invalid_json"},
		{"revocation empty body", "POST", "/api/v1/revocations", admin, "", 400, "invalid_json"},
		{"revocation trailing data", "POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"x","ttl":"1h"} {}`, 400, "invalid_json"},
		{"revocation oversized body", "POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"x","reason":"` + strings.Repeat("a", 70000) + `"}`, 413, "body_too_large"},
		{"delete bad kind", "DELETE", "/api/v1/revocations/planet/x", admin, "", 400, "invalid_kind"},
		{"audit bad limit", "GET", "/api/v1/audit?limit=0", admin, "", 400, "invalid_limit"},
		{"audit bad since", "GET", "/api/v1/audit?since=yesterday", admin, "", 400, "invalid_since"},
		{"audit bad after", "GET", "/api/v1/audit?after=-1", admin, "", 400, "invalid_after"},
		{"status without stats scope", "GET", "/status", reader, "", 403, "scope_forbidden"},
		{"metrics without token", "GET", "/metrics", "", "", 401, "missing_token"},
		{"mint without scopes", "POST", "/api/v1/tokens", admin, `{"topic":"lab","ttl":"1h"}`, 400, "invalid_scopes"},
		{"mint ttl too long", "POST", "/api/v1/tokens", admin, `{"topic":"lab","scopes":["read"],"ttl":"48h"}`, 400, "invalid_ttl"},
		{"mint bad topic", "POST", "/api/v1/tokens", admin, `{"topic":"a//b","scopes":["read"],"ttl":"1h"}`, 400, "invalid_topic"},
		{"mint unknown field", "POST", "/api/v1/tokens", admin, `{"topic":"lab","scopes":["read"],"ttl":"1h","admin":true}`, 400, "invalid_json"},
		{"mint with read token", "POST", "/api/v1/tokens", reader, `{"topic":"lab","scopes":["read"],"ttl":"1h"}`, 403, "scope_forbidden"},
		{"refresh without token", "POST", "/api/v1/account/token/refresh", "", "", 401, "missing_token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, b := s.api(tc.method, tc.path, tc.tok, tc.body)
			if st != tc.status || errCode(b) != tc.code {
				t.Fatalf("got %d %s, want %d %s", st, b, tc.status, tc.code)
			}
		})
	}
	// An issuer may grant connection scopes only.
	issuer := s.sign(s.claims("", auth.ScopeIssue))
	if st, b := s.api("POST", "/api/v1/tokens", issuer, `{"scopes":["relay:admin"],"ttl":"1h"}`); st != 403 || errCode(b) != "scope_forbidden" {
		t.Fatalf("issuer minting admin: %d %s", st, b)
	}
	if st, b := s.api("POST", "/api/v1/tokens", issuer, `{"topic":"lab","scopes":["read"],"ttl":3600}`); st != 200 {
		t.Fatalf("issuer minting read: %d %s", st, b)
	}
}

func TestRevokeSubjectAndToken(t *testing.T) {
	s := startServer(t, nil)
	admin := s.adminToken()
	c := s.claims("lab", "read")
	c.Subject, c.ID = "mallory", "jti-1"
	byMallory := s.dial("lab", s.sign(c))
	c2 := s.claims("lab", "read")
	c2.Subject, c2.ID = "alice", "jti-2"
	aliceTok := s.sign(c2)
	alice := s.dial("lab", aliceTok)
	wait.For(t, "connections", func() bool { return s.Relay().Stats().Connections == 2 })

	body := `{"kind":"subject","value":"mallory","reason":"abuse","ttl":"2h"}`
	for range 2 { // idempotent
		if st, b := s.api("POST", "/api/v1/revocations", admin, body); st != 200 || !strings.Contains(string(b), `"reason":"abuse"`) {
			t.Fatalf("revoke subject: %d %s", st, b)
		}
	}
	expectClose(t, byMallory, 4003)
	if st, b := s.api("POST", "/api/v1/revocations", admin, `{"kind":"token","value":"jti-2","expires_at":"`+s.clock.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339)+`"}`); st != 200 {
		t.Fatalf("revoke token: %d %s", st, b)
	}
	expectClose(t, alice, 4003)
	req, _ := http.NewRequest("POST", s.url+"/session/lab", nil)
	req.Header.Set("Authorization", aliceTok)
	if st, code, _ := do(t, req); st != 403 || code != "token_revoked" {
		t.Fatalf("access with revoked token: %d %s", st, code)
	}
	_, b := s.api("GET", "/api/v1/revocations?kind=subject", admin, "")
	if !strings.Contains(string(b), `"value":"mallory"`) || strings.Contains(string(b), "jti-2") {
		t.Fatalf("list: %s", b)
	}
	if st, _ := s.api("DELETE", "/api/v1/revocations/token/jti-2", admin, ""); st != 204 {
		t.Fatalf("delete: %d", st)
	}
	if st, _ := s.api("DELETE", "/api/v1/revocations/token/jti-2", admin, ""); st != 204 {
		t.Fatalf("delete again: %d", st)
	}
	s.dial("lab", aliceTok) // works again

	// The audit log has every change, in order, with the actor.
	_, b = s.api("GET", "/api/v1/audit?limit=3", admin, "")
	var page struct {
		Events []struct {
			ID     int64  `json:"id"`
			Actor  string `json:"actor"`
			Action string `json:"action"`
			Target string `json:"target"`
		} `json:"events"`
		NextAfter int64 `json:"next_after"`
	}
	json.Unmarshal(b, &page)
	if len(page.Events) != 3 || page.Events[0].Action != "revoke" || page.Events[0].Actor != "operator" || page.Events[0].Target != "subject:mallory" {
		t.Fatalf("audit page 1: %s", b)
	}
	_, b = s.api("GET", fmt.Sprintf("/api/v1/audit?after=%d", page.NextAfter), admin, "")
	json.Unmarshal(b, &page)
	if len(page.Events) != 2 || page.Events[0].Action != "unrevoke" {
		t.Fatalf("audit page 2: %s", b)
	}
}

func TestStatusStatsTopicAndMetrics(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.MetricsListen = "127.0.0.1:0"; c.StatsEvery = time.Hour })
	statsTok := s.token("stats", auth.ScopeStats)
	stats := s.dial("stats", statsTok)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A connect is reported on the stats topic within a second.
	c := s.claims("lab", "read", "write")
	c.BookingID, c.Subject = "b7", "bob"
	start := time.Now()
	s.dial("lab", s.sign(c))
	for {
		_, data, err := stats.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), `"booking_id":"b7"`) {
			break
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("connect reported after %v", d)
	}
	// Writing to the stats topic is a policy violation.
	stats.Write(ctx, client.Text, []byte("hello"))
	expectClose(t, stats, 1008)
	// Reading it needs relay:stats.
	req, _ := http.NewRequest("POST", s.url+"/session/stats", nil)
	req.Header.Set("Authorization", s.token("stats", "read"))
	if st, code, _ := do(t, req); st != 403 || code != "scope_forbidden" {
		t.Fatalf("stats without scope: %d %s", st, code)
	}

	wait.For(t, "stats reader gone", func() bool { return s.Relay().Stats().Connections == 1 })
	st, b := s.api("GET", "/status", statsTok, "")
	var report []map[string]any
	if st != 200 || json.Unmarshal(b, &report) != nil || len(report) != 1 {
		t.Fatalf("status: %d %s", st, b)
	}
	for _, field := range []string{"topic", "can_read", "can_write", "connected_at", "expires_at", "remote_addr", "user_agent",
		"scopes", "id", "prefix", "booking_id", "sub", "messages_in", "bytes_in", "messages_out", "bytes_out", "drops", "last_activity"} {
		if _, ok := report[0][field]; !ok {
			t.Errorf("status lacks %q: %s", field, b)
		}
	}
	if report[0]["sub"] != "bob" || report[0]["topic"] != "lab" {
		t.Fatalf("status: %s", b)
	}

	st, b = s.api("GET", "/metrics", statsTok, "")
	for _, m := range []string{`switchboard_connections{prefix="session"} 1`, "switchboard_access_total", `switchboard_closes_total{code="1008",reason="policy_violation"} 1`} {
		if !strings.Contains(string(b), m) {
			t.Errorf("metrics lack %q", m)
		}
	}
	if st != 200 {
		t.Fatalf("metrics: %d", st)
	}
	resp, err := http.Get("http://" + s.MetricsAddr().String() + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("metrics listener: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestTokenAPIAndRefresh(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.MaxRefreshLifetime = 40 * time.Minute })
	admin := s.adminToken()
	st, b := s.api("POST", "/api/v1/tokens", admin, `{"topic":"lab","scopes":["read","write"],"sub":"carol","ttl":"30m"}`)
	var minted struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if st != 200 || json.Unmarshal(b, &minted) != nil || minted.Token == "" {
		t.Fatalf("mint: %d %s", st, b)
	}
	if d := minted.ExpiresAt.Sub(s.clock.Now()); d < 29*time.Minute || d > 31*time.Minute {
		t.Fatalf("expiry in %v", d)
	}
	s.dial("lab", minted.Token) // usable for access

	s.clock.Advance(20 * time.Minute)
	st, b = s.api("POST", "/api/v1/account/token/refresh", minted.Token, "")
	var refreshed struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	// The new expiry is the token's lifetime again, capped at the maximum
	// lifetime from the original issue (minted at expiry-30m, so +40m).
	limit := minted.ExpiresAt.Add(-30 * time.Minute).Add(40 * time.Minute)
	if st != 200 || json.Unmarshal(b, &refreshed) != nil || !refreshed.ExpiresAt.After(minted.ExpiresAt) || refreshed.ExpiresAt.After(limit) {
		t.Fatalf("refresh: %d %s (limit %v)", st, b, limit)
	}
	claims := new(auth.Claims)
	jwt.NewParser().ParseUnverified(refreshed.Token, claims)
	if claims.Subject != "carol" || claims.Topic != "lab" || claims.OrigIssuedAt == nil {
		t.Fatalf("refreshed claims %+v", claims)
	}
	// A booking's tokens end with the booking: no refresh.
	if st, b := s.api("POST", "/api/v1/account/token/refresh", s.bookingToken("lab", "b6", "read"), ""); st != 403 || errCode(b) != "token_not_refreshable" {
		t.Fatalf("refresh booking token: %d %s", st, b)
	}
	// Revoked tokens cannot be refreshed.
	s.api("POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"carol","ttl":"1h"}`)
	if st, b := s.api("POST", "/api/v1/account/token/refresh", refreshed.Token, ""); st != 403 || errCode(b) != "token_revoked" {
		t.Fatalf("refresh revoked: %d %s", st, b)
	}
	_, b = s.api("GET", "/api/v1/audit?since="+url.QueryEscape(s.clock.Now().Add(-3*time.Hour).Format(time.RFC3339)), admin, "")
	for _, action := range []string{"token.mint", "token.refresh", "revoke"} {
		if !strings.Contains(string(b), `"action":"`+action+`"`) {
			t.Errorf("audit lacks %s: %s", action, b)
		}
	}
}
