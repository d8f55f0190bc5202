package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestEnrolRenewRevokeHost: an operator enrols an agent through the API
// (no hub secret on the agent's machine); the real `switchboard host`
// connects with that token, renews it before it expires (the token file is
// replaced and the channel outlives the first token's expiry); revoking
// the agent's subject closes its channel with 4003 and its next renewal
// is refused. The token lifetime is the shortest allowed (10 s): the test
// waits on the real clock, polling with deadlines.
func TestEnrolRenewRevokeHost(t *testing.T) {
	e := &hostEnv{dir: t.TempDir(), listen: freePort(t)}
	e.startServe(t)
	operator := strings.TrimSpace(mustRun(t, "token", "--data-dir", e.dir, "--scopes", "jobs:admin", "--sub", "olga", "--ttl", "1h"))
	admin := strings.TrimSpace(mustRun(t, "token", "--data-dir", e.dir, "--scopes", "relay:admin", "--sub", "root", "--ttl", "1h"))
	api := func(method, path, tok, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	st, body := api("POST", "/api/v1/agents/enrol", operator, `{"id":"c1","labels":["role=client"],"ttl":"10s"}`)
	var enrolled struct {
		Token     string
		ExpiresAt time.Time `json:"expires_at"`
	}
	if st != 200 || json.Unmarshal([]byte(body), &enrolled) != nil || enrolled.Token == "" {
		t.Fatalf("enrol: %d %s", st, body)
	}
	tokenFile := writeFile(t, "agent.jwt", enrolled.Token+"\n")
	cfg := `url: ` + e.url + `
token_file: ` + tokenFile + `
agent:
  id: c1
  labels: [role=client]
  state_dir: ` + t.TempDir() + `
  actions:
    - name: noop
      timeout: 1m
      command: [/bin/true]
`
	host := startMain(t, "host", "--config", writeFile(t, "host.yaml", cfg), "--log-format", "json")
	connected := func() bool {
		select {
		case <-host.exited:
			t.Fatalf("switchboard host exited: %v", host.cmd.ProcessState)
		default:
		}
		_, b := api("GET", "/api/v1/agents", operator, "")
		return strings.Contains(b, `"id":"c1","connected":true`)
	}
	wait.Within(t, 10*time.Second, "the agent connected with the enrolled token", connected)

	// Renewed at two thirds of its 10 s: the file holds a new token of the
	// same chain, expiring later.
	var renewed string
	wait.Within(t, 15*time.Second, "the token file renewed", func() bool {
		b, err := os.ReadFile(tokenFile)
		renewed = strings.TrimSpace(string(b))
		return err == nil && renewed != enrolled.Token
	})
	first, next := new(auth.Claims), new(auth.Claims)
	jwt.NewParser().ParseUnverified(enrolled.Token, first)
	if _, _, err := jwt.NewParser().ParseUnverified(renewed, next); err != nil || next.ID != first.ID || next.Agent != "c1" ||
		!next.Expiry().After(first.Expiry()) {
		t.Fatalf("renewed token: %+v (%v)", next, err)
	}
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	// The channel is up after the first token expired: the hub closed it
	// (4001) and the host came back with the renewed token from the file.
	wait.Within(t, 15*time.Second, "the agent connected after the first token expired", func() bool {
		return time.Now().After(first.Expiry().Add(2*time.Second)) && connected()
	})

	// Revoking the agent's subject closes its channel with 4003 …
	if st, b := api("POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"agent:c1","reason":"decommissioned","ttl":"1h"}`); st != 200 {
		t.Fatalf("revoke: %d %s", st, b)
	}
	revokedAt := time.Now()
	wait.Within(t, 10*time.Second, "the host's channel closed with 4003", func() bool {
		return hostLogged(host, "link closed: denied by an operator; backing off long", "code", 4003)
	})
	// The host sees its 4003 before the hub has finished taking the channel
	// out of its list of connected agents: that follows at once, not before.
	wait.Within(t, 5*time.Second, "the hub no longer lists the revoked agent as connected", func() bool {
		return !connected()
	})
	// … and its next renewal is refused; the file keeps its last token.
	wait.Within(t, 15*time.Second, "the renewal refused", func() bool {
		return hostLogged(host, "token renewal refused by the hub; the token is used until it expires; enrol the agent again", "code", "token_revoked")
	})
	// No token issued after the revocation reached the file (one renewal
	// may have been under way while the revocation was recorded).
	b, _ := os.ReadFile(tokenFile)
	last := new(auth.Claims)
	if _, _, err := jwt.NewParser().ParseUnverified(strings.TrimSpace(string(b)), last); err != nil || last.IssuedAt.After(revokedAt) {
		t.Fatalf("token file after the revocation: issued %v, revoked at %v (%v)", last.IssuedAt, revokedAt, err)
	}
	// Nothing the host logged holds a token.
	if out := host.errOut.String(); strings.Contains(out, enrolled.Token) || strings.Contains(out, renewed) || strings.Contains(out, strings.TrimSpace(string(b))) {
		t.Fatal("the host logged a token")
	}
	// The audit log has the enrolment and the renewal under the agent's name.
	_, audit := api("GET", "/api/v1/audit?limit=1000", admin, "")
	if !strings.Contains(audit, `"action":"agent.enrol"`) || !strings.Contains(audit, `"actor":"agent:c1","action":"token.refresh"`) {
		t.Fatalf("audit: %s", audit)
	}
}

// hostLogged reports whether the child logged (JSON) a line with message
// msg and attribute key equal to want.
func hostLogged(c *child, msg, key string, want any) bool {
	sc := bufio.NewScanner(strings.NewReader(c.errOut.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["msg"] != msg {
			continue
		}
		switch w := want.(type) {
		case int:
			if n, ok := line[key].(float64); ok && int(n) == w {
				return true
			}
		default:
			if line[key] == want {
				return true
			}
		}
	}
	return false
}
