package web_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/switchboard-hub/switchboard/internal/web"
)

// idleListener never accepts: mockoidc "serves" on it while the test
// serves mockoidc's handler on a real listener, which it can switch off.
type idleListener struct {
	addr   net.Addr
	once   sync.Once
	closed chan struct{}
}

func (l *idleListener) Accept() (net.Conn, error) {
	<-l.closed
	return nil, net.ErrClosed
}

func (l *idleListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *idleListener) Addr() net.Addr { return l.addr }

// idp is a mock OpenID Connect provider (mockoidc) in the test process,
// which can be taken down (it then answers 503).
type idp struct {
	m    *mockoidc.MockOIDC
	down atomic.Bool
}

func startIdP(t *testing.T) *idp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(&idleListener{addr: ln.Addr(), closed: make(chan struct{})}, nil); err != nil {
		t.Fatal(err)
	}
	p := &idp{m: m}
	mockHandler := m.Server.Handler
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		mockHandler.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		m.Shutdown()
	})
	return p
}

// oidcConfig is the dashboard's configuration for the mock provider.
func (p *idp) config() *web.OIDCConfig {
	return &web.OIDCConfig{
		Issuer: p.m.Issuer(), ClientID: p.m.ClientID, ClientSecret: p.m.ClientSecret,
		Scopes:      []string{"groups"},
		AdminGroups: []string{"admins"}, OperatorGroups: []string{"ops"}, ViewerGroups: []string{"staff"},
	}
}

func newOIDCEnv(t *testing.T, p *idp, tweak func(*web.OIDCConfig)) *env {
	return newEnv(t, func(c *web.Config) {
		c.OIDC = p.config()
		if tweak != nil {
			tweak(c.OIDC)
		}
	})
}

// oidcSteps runs a login up to the callback: it returns the provider's
// authorize URL, which the test may alter, and a function that visits it
// and returns the callback URL.
func (e *env) oidcStart(next string) string {
	e.t.Helper()
	r := e.get("/auth/oidc/login?next=" + url.QueryEscape(next))
	if r.status != http.StatusSeeOther {
		e.t.Fatalf("oidc login: %d %s", r.status, r.body)
	}
	return r.location
}

func (e *env) authorize(authURL string) string {
	e.t.Helper()
	r := do(e.t, e.browser, "GET", authURL, nil)
	if r.status != http.StatusFound || !strings.HasPrefix(r.location, e.url+"/auth/oidc/callback?") {
		e.t.Fatalf("authorize: %d %q %s", r.status, r.location, r.body)
	}
	return r.location
}

// oidcLogin runs a whole login and returns the callback's answer.
func (e *env) oidcLogin(next string) response {
	e.t.Helper()
	return e.get(e.authorize(e.oidcStart(next)))
}

func user(sub, email string, groups ...string) *mockoidc.MockUser {
	return &mockoidc.MockUser{Subject: sub, Email: email, EmailVerified: true, PreferredUsername: sub, Groups: groups}
}

func TestOIDCLogin(t *testing.T) {
	p := startIdP(t)
	e := newOIDCEnv(t, p, nil)

	// The login page offers the provider.
	page := e.get("/login?next=%2Ftest%2Fwhoami")
	if page.status != http.StatusOK || !strings.Contains(page.body, `href="/auth/oidc/login?next=%2Ftest%2Fwhoami"`) {
		t.Fatalf("login page: %d %s", page.status, page.body)
	}

	p.m.QueueUser(user("alice", "alice@example.org", "staff", "admins"))
	authURL := e.oidcStart("/test/whoami?tab=2")
	q := mustQuery(t, authURL)
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" ||
		q.Get("scope") != "openid profile email groups" || q.Get("redirect_uri") != e.url+"/auth/oidc/callback" {
		t.Fatalf("authorize URL %s", authURL)
	}
	r := e.get(e.authorize(authURL))
	if r.status != http.StatusSeeOther || r.location != "/test/whoami?tab=2" {
		t.Fatalf("callback: %d %q %s", r.status, r.location, r.body)
	}
	got := e.whoami()
	if got["subject"] != "oidc:alice" || got["role"] != "admin" || got["email"] != "alice@example.org" || got["provider"] != "oidc" {
		t.Fatalf("session %v", got)
	}
	// The login state is single use: replaying the callback is refused.
	if r := e.get(e.url + "/auth/oidc/callback?" + mustQuery(t, authURL).Encode()); r.status != http.StatusBadRequest {
		t.Fatalf("replayed callback: %d", r.status)
	}
}

func mustQuery(t *testing.T, u string) url.Values {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return pu.Query()
}

func TestOIDCRoles(t *testing.T) {
	p := startIdP(t)
	for _, tc := range []struct {
		groups []string
		role   string
	}{
		{[]string{"ops"}, "operator"},
		{[]string{"staff"}, "viewer"},
		{[]string{"staff", "ops", "other"}, "operator"},
	} {
		e := newOIDCEnv(t, p, nil)
		p.m.QueueUser(user("u1", "u1@example.org", tc.groups...))
		if r := e.oidcLogin("/ui/"); r.status != http.StatusSeeOther {
			t.Fatalf("%v: %d %s", tc.groups, r.status, r.body)
		}
		if got := e.whoami(); got["role"] != tc.role {
			t.Fatalf("%v: role %v, want %s", tc.groups, got["role"], tc.role)
		}
	}
	// In no mapped group: the denied page, and no session.
	e := newOIDCEnv(t, p, nil)
	p.m.QueueUser(user("u2", "u2@example.org", "visitors"))
	r := e.oidcLogin("/ui/")
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "none of the groups") || !strings.Contains(r.body, "Access denied") {
		t.Fatalf("no role: %d %s", r.status, r.body)
	}
	if r := e.get("/test/whoami"); r.status != http.StatusSeeOther {
		t.Fatalf("denied user has a session: %d", r.status)
	}
}

func TestOIDCAllowlists(t *testing.T) {
	p := startIdP(t)
	e := newOIDCEnv(t, p, func(c *web.OIDCConfig) {
		c.AllowEmails = []string{"Alice@Example.org"}
		c.AllowSubjects = []string{"carol"}
	})
	// Outside the allowlist, even in the admin group: 403.
	p.m.QueueUser(user("bob", "bob@example.org", "admins"))
	r := e.oidcLogin("/ui/")
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "bob@example.org") || !strings.Contains(r.body, "allowlist") {
		t.Fatalf("bob: %d %s", r.status, r.body)
	}
	// An unverified address does not count.
	p.m.QueueUser(&mockoidc.MockUser{Subject: "mallory", Email: "alice@example.org", EmailVerified: false, Groups: []string{"admins"}})
	if r := e.oidcLogin("/ui/"); r.status != http.StatusForbidden {
		t.Fatalf("unverified e-mail: %d %s", r.status, r.body)
	}
	// On the list by e-mail (case does not matter) or by subject.
	p.m.QueueUser(user("alice", "alice@example.org", "staff"))
	if r := e.oidcLogin("/ui/"); r.status != http.StatusSeeOther {
		t.Fatalf("alice: %d %s", r.status, r.body)
	}
	p.m.QueueUser(user("carol", "carol@elsewhere.example", "ops"))
	if r := e.oidcLogin("/ui/"); r.status != http.StatusSeeOther {
		t.Fatalf("carol: %d %s", r.status, r.body)
	}
	if got := e.whoami(); got["subject"] != "oidc:carol" || got["role"] != "operator" {
		t.Fatalf("carol: %v", got)
	}
	// Allowlisted but in no group: denied, unless a default role is set.
	p.m.QueueUser(user("carol", "carol@elsewhere.example"))
	if r := newOIDCEnv(t, p, func(c *web.OIDCConfig) { c.AllowSubjects = []string{"carol"} }).oidcLogin("/ui/"); r.status != http.StatusForbidden {
		t.Fatalf("carol without groups: %d", r.status)
	}
	p.m.QueueUser(user("carol", "carol@elsewhere.example"))
	e = newOIDCEnv(t, p, func(c *web.OIDCConfig) { c.AllowSubjects, c.DefaultRole = []string{"carol"}, web.RoleViewer })
	if r := e.oidcLogin("/ui/"); r.status != http.StatusSeeOther {
		t.Fatalf("carol with a default role: %d %s", r.status, r.body)
	}
	if got := e.whoami(); got["role"] != "viewer" {
		t.Fatalf("default role: %v", got)
	}
}

func TestOIDCWrongStateRefused(t *testing.T) {
	p := startIdP(t)
	e := newOIDCEnv(t, p, nil)
	cb := e.authorize(e.oidcStart("/ui/"))
	u, _ := url.Parse(cb)
	q := u.Query()
	q.Set("state", "forged-"+q.Get("state"))
	u.RawQuery = q.Encode()
	r := e.get(u.String())
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "state") {
		t.Fatalf("wrong state: %d %s", r.status, r.body)
	}
	if r := e.get("/test/whoami"); r.status != http.StatusSeeOther {
		t.Fatalf("a session was created: %d", r.status)
	}

	// A callback in a browser that started no login (login CSRF): refused.
	cb = e.authorize(e.oidcStart("/ui/"))
	r = do(t, newBrowser(t), "GET", cb, nil)
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "not started from this browser") {
		t.Fatalf("foreign callback: %d %s", r.status, r.body)
	}
	// Missing state.
	cb = e.authorize(e.oidcStart("/ui/"))
	u, _ = url.Parse(cb)
	q = u.Query()
	q.Del("state")
	u.RawQuery = q.Encode()
	if r := e.get(u.String()); r.status != http.StatusBadRequest {
		t.Fatalf("missing state: %d %s", r.status, r.body)
	}
	// The provider reporting an error.
	if r := e.get("/auth/oidc/callback?error=access_denied&error_description=user+said+no"); r.status != http.StatusBadRequest || !strings.Contains(r.body, "user said no") {
		t.Fatalf("provider error: %d %s", r.status, r.body)
	}
}

func TestOIDCWrongNonceRefused(t *testing.T) {
	p := startIdP(t)
	e := newOIDCEnv(t, p, nil)
	p.m.QueueUser(user("alice", "alice@example.org", "admins"))
	// The provider is asked for an ID token with another nonce than the
	// one kept in the browser's login state (as a token injected from
	// another login would carry).
	u, _ := url.Parse(e.oidcStart("/ui/"))
	q := u.Query()
	q.Set("nonce", "not-the-nonce")
	u.RawQuery = q.Encode()
	r := e.get(e.authorize(u.String()))
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "nonce") {
		t.Fatalf("wrong nonce: %d %s", r.status, r.body)
	}
	if r := e.get("/test/whoami"); r.status != http.StatusSeeOther {
		t.Fatalf("a session was created: %d", r.status)
	}
}

func TestOIDCProviderDown(t *testing.T) {
	// Nothing listens at the issuer: the handler is still created (serve
	// starts), the login answers 502 with an error page, and the rest of
	// the server is unaffected.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String() + "/oidc"
	ln.Close()
	e := newEnv(t, func(c *web.Config) {
		c.OIDC = &web.OIDCConfig{Issuer: issuer, ClientID: "c", ClientSecret: "s", AdminGroups: []string{"admins"}, Name: "Lab SSO"}
	})
	r := e.get("/auth/oidc/login?next=%2Fui%2F")
	if r.status != http.StatusBadGateway || !strings.Contains(r.body, "Lab SSO could not be reached") ||
		!strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("provider down: %d %s", r.status, r.body)
	}
	if r := e.get("/login"); r.status != http.StatusOK || !strings.Contains(r.body, "Sign in with Lab SSO") {
		t.Fatalf("login page: %d", r.status)
	}
	e.loginWithLink() // other logins still work
}

func TestOIDCDiscoveryRetried(t *testing.T) {
	p := startIdP(t)
	p.down.Store(true)
	e := newOIDCEnv(t, p, nil)
	if r := e.get("/auth/oidc/login"); r.status != http.StatusBadGateway {
		t.Fatalf("down: %d %s", r.status, r.body)
	}
	p.down.Store(false)
	e.clock.Advance(time.Minute)
	p.m.QueueUser(user("alice", "alice@example.org", "admins"))
	if r := e.oidcLogin("/ui/"); r.status != http.StatusSeeOther {
		t.Fatalf("after recovery: %d %s", r.status, r.body)
	}
	// Down at the callback (after discovery): 502 too.
	cb := e.authorize(e.oidcStart("/ui/"))
	p.down.Store(true)
	if r := e.get(cb); r.status != http.StatusBadGateway {
		t.Fatalf("down at the code exchange: %d %s", r.status, r.body)
	}
}

func TestOIDCExpiredSessionReturnsToTarget(t *testing.T) {
	p := startIdP(t)
	e := newEnv(t, func(c *web.Config) { c.OIDC, c.SessionTTL = p.config(), time.Minute })
	p.m.QueueUser(user("alice", "alice@example.org", "admins"))
	if r := e.oidcLogin("/ui/"); r.status != http.StatusSeeOther {
		t.Fatal(r.status)
	}
	e.clock.Advance(2 * time.Minute)
	r := e.get("/test/whoami?page=3")
	if r.status != http.StatusSeeOther || r.location != "/login?next="+url.QueryEscape("/test/whoami?page=3") {
		t.Fatalf("expired: %d %q", r.status, r.location)
	}
	// The login page's button, then the provider, lead back to the page.
	page := e.get(r.location)
	i := strings.Index(page.body, `href="/auth/oidc/login?`)
	if page.status != http.StatusOK || i < 0 {
		t.Fatalf("login page: %d %s", page.status, page.body)
	}
	href := page.body[i+len(`href="`):]
	href = strings.ReplaceAll(href[:strings.IndexByte(href, '"')], "&amp;", "&")
	p.m.QueueUser(user("alice", "alice@example.org", "admins"))
	final, visited := e.follow(href)
	if last := visited[len(visited)-1]; last != e.url+"/test/whoami?page=3" || final.status != http.StatusOK {
		t.Fatalf("landed on %s (%d): %v", last, final.status, visited)
	}
}

// keycloakUser puts its roles where Keycloak does: realm_access.roles,
// and, when infoOnly, only in the userinfo answer under "groups".
type keycloakUser struct {
	sub      string
	roles    []string
	infoOnly bool
}

func (u *keycloakUser) ID() string { return u.sub }

func (u *keycloakUser) Userinfo([]string) ([]byte, error) {
	if u.infoOnly {
		return json.Marshal(map[string]any{"sub": u.sub, "groups": u.roles})
	}
	return json.Marshal(map[string]any{"sub": u.sub})
}

func (u *keycloakUser) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	c := &struct {
		*mockoidc.IDTokenClaims
		Name        string         `json:"name"`
		RealmAccess map[string]any `json:"realm_access,omitempty"`
	}{IDTokenClaims: base, Name: "K. User"}
	if !u.infoOnly {
		c.RealmAccess = map[string]any{"roles": u.roles}
	}
	return c, nil
}

func TestOIDCRolesClaimPathAndUserinfo(t *testing.T) {
	p := startIdP(t)
	e := newOIDCEnv(t, p, func(c *web.OIDCConfig) { c.RolesClaim = "realm_access.roles" })
	p.m.QueueUser(&keycloakUser{sub: "k1", roles: []string{"ops"}})
	if r := e.oidcLogin("/ui/"); r.status != http.StatusSeeOther {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if got := e.whoami(); got["role"] != "operator" || got["name"] != "K. User" {
		t.Fatalf("nested claim: %v", got)
	}
	// Groups only at the userinfo endpoint.
	e = newOIDCEnv(t, p, nil)
	p.m.QueueUser(&keycloakUser{sub: "k2", roles: []string{"admins"}, infoOnly: true})
	if r := e.oidcLogin("/ui/"); r.status != http.StatusSeeOther {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if got := e.whoami(); got["role"] != "admin" {
		t.Fatalf("userinfo groups: %v", got)
	}
}
