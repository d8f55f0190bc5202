package agent

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/server"
)

// api sends a JSON request to the relay with tok and returns the status
// and body.
func (r *testRelay) api(method, path, tok, body string) (int, []byte) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.URL+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// apiToken signs an API token for sub with scopes.
func (r *testRelay) apiToken(sub string, scopes ...string) string {
	c := r.Claims("", scopes...)
	c.Prefix, c.Subject = "", sub
	return r.Sign(r.t, c)
}

// enrolAgent enrols agent id through the hub's API and returns its token.
func (r *testRelay) enrolAgent(id, ttl string) string {
	r.t.Helper()
	st, b := r.api("POST", "/api/v1/agents/enrol", r.apiToken("olga", auth.ScopeJobsAdmin), `{"id":"`+id+`","labels":["role=client"],"ttl":"`+ttl+`"}`)
	var e struct{ Token string }
	if st != 200 || json.Unmarshal(b, &e) != nil || e.Token == "" {
		r.t.Fatalf("enrol %s: %d %s", id, st, b)
	}
	return e.Token
}

// TestTokenRenewal: the renewer leaves a fresh token alone, renews it
// through the real hub's refresh endpoint once two thirds of its lifetime
// have passed (the file replaced, 0600, same claims, later expiry), leaves
// a token the hub refuses (revoked) in place, and takes up a token an
// operator drops in.
func TestTokenRenewal(t *testing.T) {
	hub := startRelay(t, func(c *server.Config, _ *server.Deps) { c.MaxRefreshLifetime = 3 * time.Hour })
	first := hub.enrolAgent("c1", "1h")
	file := writeFile(t, "agent.jwt", first+"\n")
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	a := &Agent{cfg: &Config{URL: hub.URL}, log: logs.logger(), backoff: fastBackoff.withDefaults(), sleep: sleep,
		http: http.DefaultClient, header: http.Header{"User-Agent": {"switchboard-host"}}}
	r := &tokenRenewer{a: a, file: file, log: a.log, now: hub.Clock.Now}
	ctx := context.Background()
	read := func() string {
		t.Helper()
		tok, err := readTokenFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	// Fresh: nothing to do; it looks again within renewCheckEvery.
	if d := r.once(ctx); d <= 0 || d > renewCheckEvery || read() != first {
		t.Fatalf("fresh token: wait %v, file changed %v", d, read() != first)
	}

	// Past two thirds of its hour: renewed.
	hub.Clock.Advance(41 * time.Minute)
	r.once(ctx)
	second := read()
	if second == first {
		t.Fatalf("not renewed; log:\n%s", logs)
	}
	_, exp1, _ := tokenTimes(first)
	iat2, exp2, ok := tokenTimes(second)
	if !ok || !exp2.After(exp1) || exp2.Sub(iat2) != time.Hour {
		t.Fatalf("renewed token: iat %v exp %v (first expired %v)", iat2, exp2, exp1)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v %v", fi.Mode(), err)
	}
	if strings.Contains(logs.String(), second) || strings.Contains(logs.String(), first) {
		t.Fatal("a token is in the log")
	}
	// The renewed token is the agent's: the hub takes it on the agent channel.
	if st, b := hub.api("POST", "/agent/c1", second, ""); st != 200 {
		t.Fatalf("access with the renewed token: %d %s", st, b)
	}
	// Not due again right away.
	if d := r.once(ctx); d <= 0 || read() != second {
		t.Fatalf("just renewed: wait %v", d)
	}

	// Revoked: the hub refuses to renew; the file keeps the token, and the
	// renewer does not ask again for that token.
	if st, b := hub.api("POST", "/api/v1/revocations", hub.apiToken("admin", auth.ScopeAdmin), `{"kind":"subject","value":"agent:c1","ttl":"24h"}`); st != 200 {
		t.Fatalf("revoke: %d %s", st, b)
	}
	hub.Clock.Advance(41 * time.Minute)
	r.once(ctx)
	if read() != second || r.refused != second || !strings.Contains(logs.String(), "token_revoked") {
		t.Fatalf("revoked token renewed? refused %v; log:\n%s", r.refused == second, logs)
	}

	// An operator lifts the revocation, enrols the agent again and drops
	// the new token in: it is renewed in its turn.
	if st, b := hub.api("DELETE", "/api/v1/revocations/subject/agent:c1", hub.apiToken("admin", auth.ScopeAdmin), ""); st != 204 {
		t.Fatalf("lift: %d %s", st, b)
	}
	third := hub.enrolAgent("c1", "30m")
	if err := os.WriteFile(file, []byte(third+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hub.Clock.Advance(21 * time.Minute)
	r.once(ctx)
	if fourth := read(); fourth == third {
		t.Fatalf("dropped-in token not renewed; log:\n%s", logs)
	}
}

// TestTokenTimes reads iat and exp without verifying, and refuses tokens
// without them.
func TestTokenTimes(t *testing.T) {
	hub := startRelay(t)
	iat, exp, ok := tokenTimes(hub.token("lab", "session", 90*time.Minute, "read"))
	if !ok || exp.Sub(iat) != 90*time.Minute {
		t.Fatalf("%v %v %v", iat, exp, ok)
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", "a.e30.c" /* {} */} {
		if _, _, ok := tokenTimes(bad); ok {
			t.Errorf("%q: ok", bad)
		}
	}
}
