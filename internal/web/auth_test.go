package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/web"
)

func TestLoginLinkSignsInOnce(t *testing.T) {
	e := newEnv(t, nil)
	link, exp, err := e.h.LoginLink()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, e.url+"/auth/link?t=") {
		t.Fatalf("link %q", link)
	}
	if d := exp.Sub(e.clock.Now()); d > web.LoginLinkTTL || d < web.LoginLinkTTL-time.Second {
		t.Fatalf("link valid for %v, want %v", d, web.LoginLinkTTL)
	}
	// A link checker's HEAD does not use it up.
	if r := do(t, newBrowser(t), "HEAD", link, nil); r.status != http.StatusOK {
		t.Fatalf("HEAD: %d", r.status)
	}
	r := e.get(link)
	if r.status != http.StatusSeeOther || r.location != "/ui/" {
		t.Fatalf("first use: %d %q", r.status, r.location)
	}
	if got := e.whoami(); got["subject"] != web.LinkSubject || got["role"] != "admin" || got["provider"] != "link" {
		t.Fatalf("session %v", got)
	}

	// Second use, from another browser: refused.
	other := newBrowser(t)
	r = do(t, other, "GET", link, nil)
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "already been used") {
		t.Fatalf("second use: %d %s", r.status, r.body)
	}
	if c := r.header.Get("Set-Cookie"); strings.Contains(c, web.SessionCookie+"=") && !strings.Contains(c, "Max-Age=0") {
		t.Fatalf("second use set a session cookie: %s", c)
	}

	// The use is recorded as a token revocation with an audit event.
	tok, _ := url.Parse(link)
	claims, err := e.cfg.Verifier.Verify(tok.Query().Get("t"))
	if err != nil {
		t.Fatal(err)
	}
	revs, err := e.store.Revocations(context.Background(), store.RevokeToken, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(revs, func(rv store.Revocation) bool { return rv.Value == claims.ID && rv.ExpiresAt.After(exp) }) {
		t.Fatalf("no revocation of jti %s in %+v", claims.ID, revs)
	}
	evs, err := e.store.Audit(context.Background(), 0, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(ev store.AuditEvent) bool { return ev.Action == "login.link" && ev.Target == "token:"+claims.ID }) {
		t.Fatalf("no login.link audit event in %+v", evs)
	}

	// A restarted server (new handler, same store) still refuses it. Its
	// URL differs, so the same token id is signed for its audience: the
	// store alone must refuse it.
	e2 := newEnv(t, func(c *web.Config) { c.Store = e.store })
	c2 := *claims
	c2.Audience = []string{e2.url}
	tok2, err := e2.key.Sign(c2)
	if err != nil {
		t.Fatal(err)
	}
	r = e2.get("/auth/link?t=" + tok2)
	if r.status != http.StatusForbidden {
		t.Fatalf("after restart: %d %s", r.status, r.body)
	}
}

func TestLoginLinkRefusals(t *testing.T) {
	e := newEnv(t, nil)
	now := e.clock.Now()
	sign := func(mod func(*auth.Claims)) string {
		c := auth.NewClaims(e.url, now, 10*time.Minute)
		c.Subject, c.Scopes = web.LinkSubject, []string{auth.ScopeLogin}
		mod(&c)
		s, err := e.key.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name, token, want string
	}{
		{"no token", "", "carries no token"},
		{"garbage", "not.a.jwt", "not valid"},
		{"API token", sign(func(c *auth.Claims) { c.Subject, c.Scopes = "ops", []string{auth.ScopeAdmin} }), "not a login link"},
		{"minted by the token API", sign(func(c *auth.Claims) { c.Prefix = "session" }), "not a login link"},
		{"admin scope too", sign(func(c *auth.Claims) { c.Scopes = append(c.Scopes, auth.ScopeAdmin) }), "not a login link"},
		{"other server", sign(func(c *auth.Claims) { c.Audience = []string{"https://elsewhere.example"} }), "not valid"},
		{"long-lived", sign(func(c *auth.Claims) { c.ExpiresAt.Time = now.Add(24 * time.Hour) }), "not a login link"},
		{"refreshed", sign(func(c *auth.Claims) { c.OrigIssuedAt = jwt.NewNumericDate(now.Add(-time.Hour)) }), "not a login link"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get("/auth/link?t=" + url.QueryEscape(tc.token))
			if r.status != http.StatusBadRequest || !strings.Contains(r.body, tc.want) {
				t.Fatalf("%d %s", r.status, r.body)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		link, _, err := e.h.LoginLink()
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(web.LoginLinkTTL + time.Minute)
		r := e.get(link)
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "expired") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

func TestRequireLoginRedirectsToLoginWithNext(t *testing.T) {
	e := newEnv(t, nil)
	r := e.get("/test/whoami?x=1&y=%2F")
	want := "/login?next=" + url.QueryEscape("/test/whoami?x=1&y=%2F")
	if r.status != http.StatusSeeOther || r.location != want {
		t.Fatalf("got %d %q, want 303 %q", r.status, r.location, want)
	}
	// The login page keeps the target in its provider links.
	e2 := newEnv(t, func(c *web.Config) {
		c.GitHub = &web.GitHubConfig{ClientID: "id", ClientSecret: "s", AllowLogins: []string{"octo"}}
	})
	page := e2.get(want)
	if page.status != http.StatusOK || !strings.Contains(page.body, `/auth/github/login?next=`+url.QueryEscape("/test/whoami?x=1&y=%2F")) {
		t.Fatalf("login page %d:\n%s", page.status, page.body)
	}

	// API paths and non-GET requests get JSON.
	for _, req := range []*http.Request{
		httptest.NewRequest("GET", "/ui/api/status", nil),
		httptest.NewRequest("POST", "/ui/jobs", nil),
	} {
		rec := httptest.NewRecorder()
		e.h.RequireLogin(http.NotFoundHandler()).ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || errorCode(t, rec.Body.String()) != "login_required" {
			t.Fatalf("%s %s: %d %s", req.Method, req.URL, rec.Code, rec.Body)
		}
	}
}

func TestExpiredSessionGoesBackToLogin(t *testing.T) {
	e := newEnv(t, func(c *web.Config) { c.SessionTTL = time.Hour })
	e.loginWithLink()
	e.whoami()
	e.clock.Advance(time.Hour + time.Second)
	r := e.get("/test/whoami?page=2")
	if r.status != http.StatusSeeOther || r.location != "/login?next="+url.QueryEscape("/test/whoami?page=2") {
		t.Fatalf("expired session: %d %q", r.status, r.location)
	}
}

func TestSessionCookie(t *testing.T) {
	e := newEnv(t, nil)
	link, _, _ := e.h.LoginLink()
	r := e.get(link)
	c := sessionCookie(t, r)
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Lax, Path=/, not Secure over http", c)
	}
	if c.MaxAge != int((12 * time.Hour).Seconds()) {
		t.Fatalf("cookie Max-Age %d, want the 12 h default", c.MaxAge)
	}

	// Under https the cookie is Secure.
	pub, _ := url.Parse("https://sb.example.org")
	cfg := e.cfg
	cfg.PublicURL = pub
	cfg.Verifier = auth.NewVerifier(e.key, pub.String(), auth.VerifierOptions{Now: e.clock.Now})
	h, err := web.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	link, _, _ = h.LoginLink()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", link, nil))
	c = sessionCookie(t, response{header: rec.Header()})
	if rec.Code != http.StatusSeeOther || !c.Secure || !c.HttpOnly {
		t.Fatalf("https: %d cookie %+v", rec.Code, c)
	}

	// A tampered cookie is no session, and is cleared.
	b := newBrowser(t)
	req, _ := http.NewRequest("GET", e.url+"/test/whoami", nil)
	v := []byte(sessionCookie(t, e.get(mustLink(t, e.h))).Value)
	v[10] ^= 1
	req.AddCookie(&http.Cookie{Name: web.SessionCookie, Value: string(v)})
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Set-Cookie"), web.SessionCookie+"=;") {
		t.Fatalf("tampered cookie: %d %v", resp.StatusCode, resp.Header)
	}
}

func mustLink(t *testing.T, h *web.Handler) string {
	link, _, err := h.LoginLink()
	if err != nil {
		t.Fatal(err)
	}
	return link
}

func TestLogoutIsServerSide(t *testing.T) {
	e := newEnv(t, nil)
	r := e.get(mustLink(t, e.h))
	stolen := sessionCookie(t, r).Value
	e.whoami()

	r = do(t, e.browser, "POST", e.url+"/logout", map[string]string{"Origin": e.url, "Sec-Fetch-Site": "same-origin"})
	if r.status != http.StatusSeeOther || r.location != "/login" {
		t.Fatalf("logout: %d %q %s", r.status, r.location, r.body)
	}
	if c := sessionCookie(t, r); c.MaxAge >= 0 {
		t.Fatalf("logout did not clear the cookie: %+v", c)
	}
	if r := e.get("/test/whoami"); r.status != http.StatusSeeOther {
		t.Fatalf("after logout: %d", r.status)
	}
	// The copied cookie no longer works either.
	r = do(t, newBrowser(t), "GET", e.url+"/test/whoami", map[string]string{"Cookie": web.SessionCookie + "=" + stolen})
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.location, "/login") {
		t.Fatalf("copied cookie after logout: %d %q", r.status, r.location)
	}
}

func TestRequireRole(t *testing.T) {
	e := newEnv(t, nil)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	viewer := &web.Session{Subject: "oidc:v", Name: "Vera", Role: web.RoleViewer}
	serve := func(method, path string, s *web.Session) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		if s != nil {
			req = req.WithContext(web.WithSession(req.Context(), s))
		}
		rec := httptest.NewRecorder()
		e.h.RequireRole(web.RoleOperator, ok).ServeHTTP(rec, req)
		return rec
	}
	rec := serve("GET", "/ui/revocations", viewer)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "needs the operator role") ||
		!strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || !strings.Contains(rec.Body.String(), "Vera") ||
		!strings.Contains(rec.Body.String(), `<form method="post" action="/logout">`) {
		t.Fatalf("viewer page: %d %s", rec.Code, rec.Body)
	}
	rec = serve("POST", "/ui/api/bids/deny", viewer)
	if rec.Code != http.StatusForbidden || errorCode(t, rec.Body.String()) != "role_forbidden" || !strings.Contains(rec.Body.String(), "operator") {
		t.Fatalf("viewer API: %d %s", rec.Code, rec.Body)
	}
	if rec := serve("POST", "/ui/api/bids/deny", &web.Session{Role: web.RoleAdmin}); rec.Code != http.StatusNoContent {
		t.Fatalf("admin: %d", rec.Code)
	}
	// Without a session RequireRole asks for a login.
	if rec := serve("GET", "/ui/revocations", nil); rec.Code != http.StatusSeeOther {
		t.Fatalf("no session: %d", rec.Code)
	}
	// Over HTTP with a real session.
	e.loginWithLink()
	if r := e.get("/test/operator"); r.status != http.StatusOK {
		t.Fatalf("admin over HTTP: %d %s", r.status, r.body)
	}
}

func TestProtectRefusesCrossOriginRequests(t *testing.T) {
	e := newEnv(t, nil)
	e.loginWithLink()
	post := func(path string, hdr map[string]string) response {
		return do(t, e.browser, "POST", e.url+path, hdr)
	}
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "https://evil.example"},
	} {
		for _, path := range []string{"/test/change", "/logout", "/ui/anything", "/ui/api/bids/deny"} {
			r := post(path, hdr)
			if r.status != http.StatusForbidden || errorCode(t, r.body) != "cross_origin_forbidden" {
				t.Fatalf("POST %s %v: %d %s", path, hdr, r.status, r.body)
			}
		}
	}
	e.whoami() // the forged logout did not log out
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "same-origin"},
		{"Origin": e.url},
		nil, // not a browser
	} {
		if r := post("/test/change", hdr); r.status != http.StatusOK {
			t.Fatalf("POST %v: %d %s", hdr, r.status, r.body)
		}
	}
	// Safe methods are never refused.
	if r := do(t, e.browser, "GET", e.url+"/test/whoami", map[string]string{"Sec-Fetch-Site": "cross-site"}); r.status != http.StatusOK {
		t.Fatalf("cross-site GET: %d", r.status)
	}
}

func TestLoginPage(t *testing.T) {
	e := newEnv(t, nil)
	r := e.get("/login")
	if r.status != http.StatusOK || !strings.Contains(r.body, "No single sign-on provider") ||
		!strings.Contains(r.body, `href="/ui/static/app.css"`) || !strings.Contains(r.body, "login-link") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Fatalf("Cache-Control %q", got)
	}
	// Signed in: straight on to next, if it is a same-site path.
	e.loginWithLink()
	for next, want := range map[string]string{
		"/ui/jobs?x=1":              "/ui/jobs?x=1",
		"//evil.example/":           "/ui/",
		"https://evil.example/":     "/ui/",
		"/\\evil.example":           "/ui/",
		"/login?next=/ui/":          "/ui/",
		"javascript:alert(1)":       "/ui/",
		"/auth/link?t=x":            "/ui/",
		"/ui/%2F%2Fevil.example/ok": "/ui/%2F%2Fevil.example/ok",
	} {
		r := e.get("/login?next=" + url.QueryEscape(next))
		if r.status != http.StatusSeeOther || r.location != want {
			t.Errorf("next %q: %d %q, want %q", next, r.status, r.location, want)
		}
	}
}

func TestAccountToken(t *testing.T) {
	e := newEnv(t, func(c *web.Config) { c.APITokenTTL = 2 * time.Hour })
	if r := e.get("/account/token/create"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.location, "/login?next=") {
		t.Fatalf("without session: %d %q", r.status, r.location)
	}
	e.loginWithLink()
	r := e.get("/account/token/create")
	if r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-store" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	var got struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
		Scopes    []string  `json:"scopes"`
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatal(err)
	}
	c, err := e.cfg.Verifier.Verify(got.Token)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != web.LinkSubject || !slices.Equal(c.Scopes, web.RoleAdmin.Scopes()) || !slices.Equal(got.Scopes, c.Scopes) {
		t.Fatalf("claims %+v, answer %+v", c, got)
	}
	if c.OrigIssuedAt == nil || !c.OrigIssuedAt.Equal(c.IssuedAt.Time) || c.Expiry().Sub(c.IssuedAt.Time) != 2*time.Hour || !got.ExpiresAt.Equal(c.Expiry()) {
		t.Fatalf("times: iat %v orig %v exp %v answer %v", c.IssuedAt, c.OrigIssuedAt, c.ExpiresAt, got.ExpiresAt)
	}
	evs, _ := e.store.Audit(context.Background(), 0, time.Time{}, 100)
	if !slices.ContainsFunc(evs, func(ev store.AuditEvent) bool {
		return ev.Action == "token.create" && ev.Target == "token:"+c.ID && ev.Actor == web.LinkSubject
	}) {
		t.Fatalf("no token.create audit event: %+v", evs)
	}
}

// denier revokes one subject when told to.
type denier struct{ subject atomic.Value }

func (d *denier) Denied(_, subject, _ string) (string, bool) {
	if s, _ := d.subject.Load().(string); s != "" && s == subject {
		return "subject", true
	}
	return "", false
}

func TestRevokedSubjectLosesSession(t *testing.T) {
	d := &denier{}
	e := newEnv(t, func(c *web.Config) { c.Revocations = d })
	e.loginWithLink()
	e.whoami()
	d.subject.Store(web.LinkSubject)
	if r := e.get("/test/whoami"); r.status != http.StatusSeeOther {
		t.Fatalf("revoked subject: %d", r.status)
	}
	d.subject.Store("")
	if r := e.get("/test/whoami"); r.status != http.StatusSeeOther {
		t.Fatalf("the session came back after the revocation was lifted: %d", r.status)
	}
}

// TestRevokedSubjectCannotSignIn: while a subject is revoked its logins
// make no session (one made then would outlive the revocation's
// enforcement, which has already run).
func TestRevokedSubjectCannotSignIn(t *testing.T) {
	d := &denier{}
	d.subject.Store(web.LinkSubject)
	e := newEnv(t, func(c *web.Config) { c.Revocations = d })
	link, _, err := e.h.LoginLink()
	if err != nil {
		t.Fatal(err)
	}
	r := e.get(link)
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "revoked") {
		t.Fatalf("login link of a revoked subject: %d %s", r.status, r.body)
	}
	for _, line := range r.header.Values("Set-Cookie") {
		if strings.HasPrefix(line, web.SessionCookie+"=") {
			t.Fatalf("a session cookie was set: %s", line)
		}
	}
	d.subject.Store("")
	if r := e.get("/test/whoami"); r.status != http.StatusSeeOther {
		t.Fatalf("after the revocation was lifted: %d, want no session", r.status)
	}
}

func TestNewRefusesBadProviderConfig(t *testing.T) {
	e := newEnv(t, nil)
	for name, tweak := range map[string]func(*web.Config){
		"github without allowlist": func(c *web.Config) { c.GitHub = &web.GitHubConfig{ClientID: "a", ClientSecret: "b"} },
		"github without secret":    func(c *web.Config) { c.GitHub = &web.GitHubConfig{ClientID: "a", AllowLogins: []string{"x"}} },
		"oidc without client id": func(c *web.Config) {
			c.OIDC = &web.OIDCConfig{Issuer: "https://id.example", AdminGroups: []string{"a"}}
		},
		"oidc without roles": func(c *web.Config) { c.OIDC = &web.OIDCConfig{Issuer: "https://id.example", ClientID: "c"} },
		"oidc bad issuer": func(c *web.Config) {
			c.OIDC = &web.OIDCConfig{Issuer: "id.example", ClientID: "c", AdminGroups: []string{"a"}}
		},
		"oidc default role, no allowlist": func(c *web.Config) {
			c.OIDC = &web.OIDCConfig{Issuer: "https://id.example", ClientID: "c", DefaultRole: web.RoleViewer}
		},
	} {
		cfg := e.cfg
		tweak(&cfg)
		if _, err := web.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
