package web_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/web"
)

// fakeGitHub is GitHub's OAuth endpoints and the two user API calls the
// dashboard makes, for one OAuth app.
type fakeGitHub struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	next   string              // login of the next user to authorize
	orgs   map[string][]string // login → organisations
	codes  map[string]grant    // code → grant
	tokens map[string]string   // access token → login
	calls  []string            // API paths called
}

type grant struct{ login, challenge, redirect string }

const ghClientID, ghClientSecret = "gh-client", "gh-secret"

func startGitHub(t *testing.T) *fakeGitHub {
	g := &fakeGitHub{t: t, orgs: map[string][]string{}, codes: map[string]grant{}, tokens: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login/oauth/authorize", g.authorize)
	mux.HandleFunc("POST /login/oauth/access_token", g.token)
	mux.HandleFunc("GET /api/user", g.user)
	mux.HandleFunc("GET /api/user/orgs", g.userOrgs)
	g.srv = httptest.NewServer(mux)
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGitHub) config(allowLogins, allowOrgs []string) *web.GitHubConfig {
	return &web.GitHubConfig{
		ClientID: ghClientID, ClientSecret: ghClientSecret,
		AllowLogins: allowLogins, AllowOrgs: allowOrgs,
		Admins: []string{"Boss"}, Operators: []string{"op"},
		AuthURL: g.srv.URL + "/login/oauth/authorize", TokenURL: g.srv.URL + "/login/oauth/access_token", APIURL: g.srv.URL + "/api",
	}
}

func (g *fakeGitHub) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != ghClientID || q.Get("scope") != "read:org" || q.Get("code_challenge_method") != "S256" {
		http.Error(w, "bad authorize request: "+r.URL.RawQuery, http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	code := fmt.Sprintf("code-%d", len(g.codes))
	g.codes[code] = grant{login: g.next, challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
	g.mu.Unlock()
	http.Redirect(w, r, q.Get("redirect_uri")+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
}

func (g *fakeGitHub) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	g.mu.Lock()
	gr, found := g.codes[r.PostForm.Get("code")]
	delete(g.codes, r.PostForm.Get("code"))
	g.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
	switch {
	case id != ghClientID || secret != ghClientSecret:
		fmt.Fprint(w, "error=incorrect_client_credentials")
	case !found || gr.redirect != r.PostForm.Get("redirect_uri"):
		fmt.Fprint(w, "error=bad_verification_code")
	case base64.RawURLEncoding.EncodeToString(sum[:]) != gr.challenge:
		fmt.Fprint(w, "error=bad_verification_code&error_description=PKCE")
	default:
		tok := "gho_" + gr.login
		g.mu.Lock()
		g.tokens[tok] = gr.login
		g.mu.Unlock()
		fmt.Fprintf(w, "access_token=%s&scope=read%%3Aorg&token_type=bearer", tok)
	}
}

func (g *fakeGitHub) login(w http.ResponseWriter, r *http.Request) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, r.URL.Path)
	login, ok := g.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	if !ok || r.Header.Get("Accept") != "application/vnd.github+json" {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
	}
	return login, ok
}

func (g *fakeGitHub) user(w http.ResponseWriter, r *http.Request) {
	if login, ok := g.login(w, r); ok {
		json.NewEncoder(w).Encode(map[string]any{"login": login, "id": 1, "name": strings.ToUpper(login), "email": login + "@users.example"})
	}
}

// userOrgs answers in pages of one organisation, linked with Link headers.
func (g *fakeGitHub) userOrgs(w http.ResponseWriter, r *http.Request) {
	login, ok := g.login(w, r)
	if !ok {
		return
	}
	g.mu.Lock()
	orgs := g.orgs[login]
	g.mu.Unlock()
	page := 0
	fmt.Sscan(r.URL.Query().Get("page"), &page)
	var out []map[string]string
	if page < len(orgs) {
		out = append(out, map[string]string{"login": orgs[page]})
	}
	if page+1 < len(orgs) {
		w.Header().Set("Link", fmt.Sprintf(`<%s/api/user/orgs?per_page=100&page=%d>; rel="next", <%s/api/user/orgs?page=9>; rel="last"`, g.srv.URL, page+1, g.srv.URL))
	}
	json.NewEncoder(w).Encode(out)
}

func (g *fakeGitHub) as(login string, orgs ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.next, g.orgs[login] = login, orgs
}

func (e *env) githubLogin(next string) response {
	e.t.Helper()
	r := e.get("/auth/github/login?next=" + url.QueryEscape(next))
	if r.status != http.StatusSeeOther {
		e.t.Fatalf("github login: %d %s", r.status, r.body)
	}
	r = do(e.t, e.browser, "GET", r.location, nil)
	if r.status != http.StatusFound {
		e.t.Fatalf("authorize: %d %s", r.status, r.body)
	}
	return e.get(r.location)
}

func TestGitHubLogin(t *testing.T) {
	g := startGitHub(t)
	e := newEnv(t, func(c *web.Config) { c.GitHub = g.config([]string{"boss", "op", "Viv"}, []string{"lab"}) })
	if r := e.get("/login"); !strings.Contains(r.body, "Sign in with GitHub") {
		t.Fatalf("login page: %s", r.body)
	}
	for _, tc := range []struct{ login, role string }{{"boss", "admin"}, {"op", "operator"}, {"viv", "viewer"}} {
		g.as(tc.login)
		r := e.githubLogin("/test/whoami?a=b")
		if r.status != http.StatusSeeOther || r.location != "/test/whoami?a=b" {
			t.Fatalf("%s: %d %q %s", tc.login, r.status, r.location, r.body)
		}
		got := e.whoami()
		if got["subject"] != "github:"+tc.login || got["role"] != tc.role || got["provider"] != "github" || got["name"] != strings.ToUpper(tc.login) {
			t.Fatalf("%s: %v", tc.login, got)
		}
	}
}

func TestGitHubOrganisations(t *testing.T) {
	g := startGitHub(t)
	e := newEnv(t, func(c *web.Config) { c.GitHub = g.config(nil, []string{"Physics-Lab"}) })
	// A member of the allowed organisation, listed on the second page.
	g.as("ann", "chess-club", "physics-lab")
	if r := e.githubLogin("/ui/"); r.status != http.StatusSeeOther {
		t.Fatalf("member: %d %s", r.status, r.body)
	}
	if got := e.whoami(); got["subject"] != "github:ann" || got["role"] != "viewer" {
		t.Fatalf("member: %v", got)
	}
	g.mu.Lock()
	calls := strings.Join(g.calls, " ")
	g.mu.Unlock()
	if calls != "/api/user /api/user/orgs /api/user/orgs" {
		t.Fatalf("API calls: %s", calls)
	}
	// Not a member: 403 naming the account.
	g.as("zed", "chess-club")
	r := e.githubLogin("/ui/")
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "zed") || !strings.Contains(r.body, "allowlist") {
		t.Fatalf("non-member: %d %s", r.status, r.body)
	}
}

func TestGitHubCallbackRefusals(t *testing.T) {
	g := startGitHub(t)
	e := newEnv(t, func(c *web.Config) { c.GitHub = g.config([]string{"ann"}, nil) })
	g.as("ann")
	r := e.get("/auth/github/login")
	r = do(t, e.browser, "GET", r.location, nil)
	u, _ := url.Parse(r.location)
	q := u.Query()
	q.Set("state", "forged")
	u.RawQuery = q.Encode()
	if r := e.get(u.String()); r.status != http.StatusBadRequest || !strings.Contains(r.body, "state") {
		t.Fatalf("wrong state: %d %s", r.status, r.body)
	}
	// A code GitHub does not know: 400.
	r = e.get("/auth/github/login")
	r = do(t, e.browser, "GET", r.location, nil)
	u, _ = url.Parse(r.location)
	q = u.Query()
	q.Set("code", "stolen")
	u.RawQuery = q.Encode()
	if r := e.get(u.String()); r.status != http.StatusBadRequest || !strings.Contains(r.body, "refused the login code") {
		t.Fatalf("bad code: %d %s", r.status, r.body)
	}
	// GitHub down at the callback: 502.
	r = e.get("/auth/github/login")
	r = do(t, e.browser, "GET", r.location, nil)
	g.srv.CloseClientConnections()
	g.srv.Close()
	if r := e.get(r.location); r.status != http.StatusBadGateway {
		t.Fatalf("GitHub down: %d %s", r.status, r.body)
	}
}
