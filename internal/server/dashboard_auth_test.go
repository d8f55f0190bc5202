package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/web"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// browser is a client with a cookie jar that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func fetch(t *testing.T, c *http.Client, method, url, bearer string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

type tokenAnswer struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Scopes    []string  `json:"scopes"`
}

// TestDashboardLoginLinkAccountTokenAndRefresh: the whole path of the
// embedded default: a login link gives an admin session, the session
// gives an account token, the refresh endpoint refreshes it, and the
// token works on the API.
func TestDashboardLoginLinkAccountTokenAndRefresh(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Web.APITokenTTL = time.Hour })
	if p := s.Dashboard().Providers(); len(p) != 0 {
		t.Fatalf("providers %v", p)
	}
	b := browser(t)
	link, _, err := s.Dashboard().LoginLink()
	if err != nil {
		t.Fatal(err)
	}
	resp, body := fetch(t, b, "GET", link, "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("login link: %d %s", resp.StatusCode, body)
	}
	resp, body = fetch(t, b, "GET", s.url+"/account/token/create", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token create: %d %s", resp.StatusCode, body)
	}
	var created tokenAnswer
	if err := json.Unmarshal([]byte(body), &created); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(created.Scopes, web.RoleAdmin.Scopes()) {
		t.Fatalf("scopes %v", created.Scopes)
	}

	// The token works on the API.
	if resp, body := fetch(t, http.DefaultClient, "GET", s.url+"/api/v1/revocations", created.Token); resp.StatusCode != http.StatusOK {
		t.Fatalf("API with the account token: %d %s", resp.StatusCode, body)
	}
	// The login link's use is listed as a token revocation.
	if _, body := fetch(t, http.DefaultClient, "GET", s.url+"/api/v1/revocations?kind=token", created.Token); !strings.Contains(body, "login link used") {
		t.Fatalf("revocations: %s", body)
	}

	// Refresh it later: same subject and scopes, new expiry, same chain.
	s.clock.Advance(30 * time.Minute)
	resp, body = fetch(t, http.DefaultClient, "POST", s.url+"/api/v1/account/token/refresh", created.Token)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh: %d %s", resp.StatusCode, body)
	}
	var refreshed tokenAnswer
	if err := json.Unmarshal([]byte(body), &refreshed); err != nil {
		t.Fatal(err)
	}
	v := auth.NewVerifier(s.key, s.url, auth.VerifierOptions{Now: s.clock.Now})
	old, err := v.Verify(created.Token)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(refreshed.Token)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != web.LinkSubject || !slices.Equal(c.Scopes, old.Scopes) || !c.OrigIssuedAt.Equal(old.OrigIssuedAt.Time) ||
		!refreshed.ExpiresAt.After(created.ExpiresAt) {
		t.Fatalf("refreshed %+v from %+v", c, old)
	}

	// Revoking the user's subject ends their dashboard session too.
	req, _ := http.NewRequest("POST", s.url+"/api/v1/revocations",
		strings.NewReader(`{"kind":"subject","value":"link:admin","ttl":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+s.sign(s.claims("", auth.ScopeAdmin)))
	if status, code, _ := do(t, req); status != http.StatusOK {
		t.Fatalf("revoke subject: %d %s", status, code)
	}
	resp, _ = fetch(t, b, "GET", s.url+"/account/token/create", "")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login?next=") {
		t.Fatalf("after the subject's revocation: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestDashboardProviderDownLeavesRelayAlone: with the OIDC provider down
// the server starts, the login answers 502, and the relay works.
func TestDashboardProviderDownLeavesRelayAlone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	ln.Close()
	s := startServer(t, func(c *Config, d *Deps) {
		c.Web.OIDC = &web.OIDCConfig{Issuer: issuer, ClientID: "dash", ClientSecret: "x", AdminGroups: []string{"admins"}}
	})
	resp, body := fetch(t, browser(t), "GET", s.url+"/auth/oidc/login?next=/ui/", "")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "could not be reached") {
		t.Fatalf("login with the provider down: %d %s", resp.StatusCode, body)
	}
	tok := s.token("expt1", auth.ScopeRead, auth.ScopeWrite)
	a, b := s.dial("expt1", tok), s.dial("expt1", tok)
	// The websockets are open before the relay has registered them.
	wait.For(t, "both connections registered", func() bool { return s.Relay().Readers("expt1") == 2 })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := a.Write(ctx, client.Text, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := b.Read(ctx); err != nil || string(msg) != "hello" {
		t.Fatalf("relay: %q %v", msg, err)
	}
	if resp, _ := fetch(t, http.DefaultClient, "GET", s.url+"/healthz", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
}

// TestDashboardRoutesCoexistWithTheRelay: the dashboard's routes and the
// access endpoint's wildcard routes share the mux; cross-origin posts
// under /ui/ are refused, relay paths are not taken over.
func TestDashboardRoutesCoexistWithTheRelay(t *testing.T) {
	s := startServer(t, nil)
	resp, _ := fetch(t, browser(t), "GET", s.url+"/ui/", "")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("GET /ui/ without a session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	req, _ := http.NewRequest("POST", s.url+"/ui/api/bids/deny?bid=b1&exp=9999999999", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if status, code, _ := do(t, req); status != http.StatusForbidden || code != "cross_origin_forbidden" {
		t.Fatalf("cross-site POST: %d %s", status, code)
	}
	// The access endpoint still owns other prefixes.
	req, _ = http.NewRequest("POST", s.url+"/session/expt1", nil)
	req.Header.Set("Authorization", "Bearer "+s.token("expt1", auth.ScopeRead))
	if status, uri, _ := do(t, req); status != http.StatusOK || !strings.Contains(uri, "code=") {
		t.Fatalf("access: %d %s", status, uri)
	}
	resp, body := fetch(t, browser(t), "GET", s.url+"/login", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Sign in") {
		t.Fatalf("login page: %d", resp.StatusCode)
	}
}

// TestTokenAPICannotMintLoginLinks: a relay:admin token (an operator's)
// can mint tokens with any subject and scopes through the token API, but
// never one the login-link endpoint accepts.
func TestTokenAPICannotMintLoginLinks(t *testing.T) {
	s := startServer(t, nil)
	req, _ := http.NewRequest("POST", s.url+"/api/v1/tokens", strings.NewReader(`{"scopes":["login"],"sub":"link:admin","ttl":"10m"}`))
	req.Header.Set("Authorization", "Bearer "+s.sign(s.claims("", auth.ScopeAdmin)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var minted tokenAnswer
	json.NewDecoder(resp.Body).Decode(&minted)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || minted.Token == "" {
		t.Fatalf("mint: %d", resp.StatusCode)
	}
	r, body := fetch(t, browser(t), "GET", s.url+"/auth/link?t="+minted.Token, "")
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "not a login link") {
		t.Fatalf("minted login link: %d %s", r.StatusCode, body)
	}
}
