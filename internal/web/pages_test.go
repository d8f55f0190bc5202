package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
)

// pagesEnv is a dashboard with a fake server API and a real relay, served
// through Register (the auth engineer's middleware included).
type pagesEnv struct {
	t     *testing.T
	h     *Handler
	mux   *http.ServeMux
	api   *fakeAPI
	relay *relay.Server
	now   time.Time
}

const testPublicURL = "https://hub.example.org"

func newPagesEnv(t *testing.T) *pagesEnv {
	t.Helper()
	pub, _ := url.Parse(testPublicURL)
	key, err := auth.NewHMACKey("HS256", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "sb.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rs, err := relay.NewServer(relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rs.Shutdown(ctx)
	})
	e := &pagesEnv{t: t, relay: rs, now: time.Now()}
	verifier := auth.NewVerifier(key, pub.String(), auth.VerifierOptions{})
	e.api = newFakeAPI(verifier)
	h, err := New(Config{
		PublicURL: pub, Key: key, Verifier: verifier, Store: st, API: e.api, Relay: rs,
		CookieKey: []byte("abcdefghijklmnopqrstuvwxyz012345"), NodeID: "n1", Version: "v1.2.3",
	})
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	e.mux = http.NewServeMux()
	h.Register(e.mux)
	return e
}

// session signs a user in and returns their cookie.
func (e *pagesEnv) session(role Role, subject, name string) *http.Cookie {
	s := e.h.sessions.mustCreate(e.t, Session{Subject: subject, Name: name, Role: role, Provider: "link"}, time.Hour)
	return &http.Cookie{Name: SessionCookie, Value: e.h.sealer.Seal(SessionCookie, []byte(s.ID))}
}

func (e *pagesEnv) do(method, target string, body io.Reader, ck *http.Cookie, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	r := httptest.NewRequest(method, target, body)
	if ck != nil {
		r.AddCookie(ck)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.mux.ServeHTTP(w, r)
	return w
}

// fakeAPI stands in for the server's API: it checks the bearer token as
// the real one does and records what it was asked.
type fakeAPI struct {
	verifier *auth.Verifier
	mux      *http.ServeMux

	mu   sync.Mutex
	reqs []apiCall // guarded by mu
}

type apiCall struct {
	Method, Path, RawPath, Query, Cookie string
	Claims                               *auth.Claims
}

func newFakeAPI(v *auth.Verifier) *fakeAPI {
	f := &fakeAPI{verifier: v, mux: http.NewServeMux()}
	jobs := map[string]string{"j-alice": "alice", "j-bob": "bob"}
	scoped := func(scope string, next func(http.ResponseWriter, *http.Request, *auth.Claims)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok {
				apierr.WriteNew(w, http.StatusUnauthorized, "token_missing", "no token")
				return
			}
			c, err := f.verifier.Verify(tok)
			if err != nil {
				apierr.WriteNew(w, http.StatusUnauthorized, "token_invalid", err.Error())
				return
			}
			f.mu.Lock()
			f.reqs = append(f.reqs, apiCall{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery,
				Cookie: r.Header.Get("Cookie"), Claims: c})
			f.mu.Unlock()
			if scope != "" && !c.HasScope(scope) {
				apierr.WriteNew(w, http.StatusForbidden, "scope_forbidden", "this endpoint needs scope "+scope)
				return
			}
			next(w, r, c)
		}
	}
	ok := func(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
		apierr.WriteJSON(w, http.StatusOK, map[string]string{"sub": c.Subject})
	}
	noContent := func(w http.ResponseWriter, r *http.Request, c *auth.Claims) { w.WriteHeader(http.StatusNoContent) }
	f.mux.HandleFunc("POST /bids/deny", scoped(auth.ScopeDeny, noContent))
	f.mux.HandleFunc("GET /status", scoped(auth.ScopeStats, ok))
	f.mux.HandleFunc("GET /metrics", scoped("", ok))
	f.mux.HandleFunc("GET /api/v1/agents", scoped(auth.ScopeJobsRead, ok))
	f.mux.HandleFunc("DELETE /api/v1/agents/{id}", scoped(auth.ScopeJobsAdmin, noContent))
	f.mux.HandleFunc("GET /api/v1/audit", scoped(auth.ScopeAdmin, ok))
	f.mux.HandleFunc("DELETE /api/v1/revocations/{kind}/{value}", scoped(auth.ScopeAdmin, noContent))
	f.mux.HandleFunc("POST /api/v1/jobs", scoped(auth.ScopeJobsWrite, func(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
		w.Header().Set("Location", testPublicURL+"/api/v1/jobs/j-new")
		w.WriteHeader(http.StatusSeeOther)
	}))
	f.mux.HandleFunc("GET /api/v1/jobs/{id}", scoped(auth.ScopeJobsRead, func(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
		owner, found := jobs[r.PathValue("id")]
		switch {
		case !found:
			apierr.WriteNew(w, http.StatusNotFound, "job_not_found", "no job "+r.PathValue("id"))
		case owner != c.Subject && !c.Allows(auth.ScopeJobsAdmin):
			apierr.WriteNew(w, http.StatusForbidden, "job_forbidden", "this job belongs to another owner")
		default:
			apierr.WriteJSON(w, http.StatusOK, map[string]string{"jobId": r.PathValue("id"), "phase": "EXECUTING", "ownerId": owner})
		}
	}))
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) { f.mux.ServeHTTP(w, r) }

func (f *fakeAPI) calls() []apiCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func (f *fakeAPI) last(t *testing.T) apiCall {
	t.Helper()
	c := f.calls()
	if len(c) == 0 {
		t.Fatal("the API was not called")
	}
	return c[len(c)-1]
}

func decodeError(t *testing.T, w *httptest.ResponseRecorder) apierr.Error {
	t.Helper()
	var body struct{ Error apierr.Error }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("not a JSON error (%d): %q", w.Code, w.Body.String())
	}
	return body.Error
}

// --- pages ---

func TestPagesRenderForViewer(t *testing.T) {
	e := newPagesEnv(t)
	ck := e.session(RoleViewer, "viewer-1", "Vera Viewer")
	pages := map[string][]string{
		"/ui/":             {`data-testid="overview-node"`, `data-testid="node-id">n1`, "v1.2.3", `data-testid="chart-messages"`, `data-testid="drops-table"`, "queue_head"},
		"/ui/connections":  {`data-testid="conn-table"`, `data-testid="conn-filter"`, `data-testid="sort-topic"`},
		"/ui/agents":       {`data-testid="agents-table"`},
		"/ui/jobs":         {`data-testid="jobs-table"`, `data-testid="phase-EXECUTING"`},
		"/ui/jobs/j-alice": {`data-job-id="j-alice"`, `data-testid="job-log"`, `data-testid="job-results"`},
		"/ui/revocations":  {`data-testid="rev-table"`},
	}
	for path, wants := range pages {
		w := e.do("GET", path, nil, ck)
		if w.Code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, w.Code, w.Body.String())
			continue
		}
		hd := w.Header()
		if ct := hd.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
		if csp := hd.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "connect-src 'self' https://hub.example.org wss://hub.example.org;") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
		if hd.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: Cache-Control %q", path, hd.Get("Cache-Control"))
		}
		body := w.Body.String()
		wants = append(wants, `data-testid="live-status"`, `data-role="viewer"`, "Vera Viewer", staticURL("app.css"), `type="module"`)
		for _, want := range wants {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: no %s in the page", path, want)
			}
		}
		// Viewers see no operator controls or links.
		for _, unwanted := range []string{`data-testid="nav-tokens"`, `data-testid="nav-audit"`, `data-testid="job-form"`, `data-testid="rev-form"`, `data-testid="job-abort"`} {
			if strings.Contains(body, unwanted) {
				t.Errorf("GET %s: a viewer's page has %s", path, unwanted)
			}
		}
		if strings.Contains(body, " style=") || strings.Contains(body, "<script>") || regexp.MustCompile(`\son[a-z]+=`).MatchString(body) {
			t.Errorf("GET %s: inline style, script or event handler (the CSP forbids them)", path)
		}
	}
}

// TestPageCSPConnectsOnlyToThisServer: the pages may fetch from and open
// websockets to this server's origin only (issue 12, item 14): no scheme
// wildcard such as ws: or wss:, which would let an injected script send
// data to any host.
func TestPageCSPConnectsOnlyToThisServer(t *testing.T) {
	for public, want := range map[string][]string{
		"https://hub.example.org":           {"'self'", "https://hub.example.org", "wss://hub.example.org"},
		"https://hub.example.org:8443/base": {"'self'", "https://hub.example.org:8443", "wss://hub.example.org:8443"},
		"http://127.0.0.1:8080":             {"'self'", "http://127.0.0.1:8080", "ws://127.0.0.1:8080"},
		"http://[::1]:8080":                 {"'self'"}, // a CSP source cannot name an IPv6 literal
	} {
		u, err := url.Parse(public)
		if err != nil {
			t.Fatal(err)
		}
		csp := pageCSP(u)
		var connect []string
		for _, d := range strings.Split(csp, ";") {
			if f := strings.Fields(d); len(f) > 0 && f[0] == "connect-src" {
				connect = f[1:]
			}
		}
		if !slices.Equal(connect, want) {
			t.Errorf("public URL %s: connect-src %q, want %q (CSP %q)", public, connect, want, csp)
		}
		if !strings.Contains(csp, "default-src 'self';") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("public URL %s: CSP %q", public, csp)
		}
	}
}

func TestPagesRoles(t *testing.T) {
	e := newPagesEnv(t)
	viewer := e.session(RoleViewer, "v", "v")
	operator := e.session(RoleOperator, "o", "o")
	admin := e.session(RoleAdmin, "a", "a")
	cases := []struct {
		path string
		ck   *http.Cookie
		want int
	}{
		{"/ui/tokens", viewer, http.StatusForbidden},
		{"/ui/tokens", operator, http.StatusOK},
		{"/ui/audit", operator, http.StatusForbidden},
		{"/ui/audit", admin, http.StatusOK},
	}
	for _, c := range cases {
		if w := e.do("GET", c.path, nil, c.ck); w.Code != c.want {
			t.Errorf("GET %s: %d, want %d", c.path, w.Code, c.want)
		}
	}
	body := e.do("GET", "/ui/jobs", nil, operator).Body.String()
	for _, want := range []string{`data-testid="job-form"`, `data-testid="nav-tokens"`} {
		if !strings.Contains(body, want) {
			t.Errorf("operator's jobs page: no %s", want)
		}
	}
	if strings.Contains(body, `data-testid="nav-audit"`) {
		t.Error("operator's nav links the audit page")
	}
	if !strings.Contains(e.do("GET", "/ui/", nil, admin).Body.String(), `data-testid="nav-audit"`) {
		t.Error("admin's nav does not link the audit page")
	}
	if !strings.Contains(e.do("GET", "/ui/tokens", nil, operator).Body.String(), `data-testid="token-form"`) {
		t.Error("tokens page has no form")
	}
}

func TestPagesRequireLogin(t *testing.T) {
	e := newPagesEnv(t)
	w := e.do("GET", "/ui/connections", nil, nil)
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login?next=") {
		t.Fatalf("no session: %d %q", w.Code, w.Header().Get("Location"))
	}
	w = e.do("GET", "/ui/api/live-token?topic=stats", nil, nil)
	if w.Code != http.StatusUnauthorized || decodeError(t, w).Code != "login_required" {
		t.Fatalf("live-token without a session: %d %s", w.Code, w.Body.String())
	}
	w = e.do("GET", "/", nil, e.session(RoleViewer, "v", "v"))
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/" {
		t.Fatalf("GET /: %d %q", w.Code, w.Header().Get("Location"))
	}
}

// A fake relay connection: it reads nothing until closed.
type idleConn struct {
	once   sync.Once
	closed chan struct{}
}

func newIdleConn() *idleConn { return &idleConn{closed: make(chan struct{})} }

func (c *idleConn) ReadMessage() (relay.MessageType, []byte, error) {
	<-c.closed
	return 0, nil, errors.New("closed")
}
func (c *idleConn) WriteMessages([]relay.Message, time.Time) error { return nil }
func (c *idleConn) Ping(time.Time) error                           { return nil }
func (c *idleConn) Close(relay.CloseCode, string) error            { c.Abort(); return nil }
func (c *idleConn) Abort()                                         { c.once.Do(func() { close(c.closed) }) }

// connect adds a connection to the relay and waits until it is registered.
func (e *pagesEnv) connect(info relay.Info) {
	e.t.Helper()
	want := e.relay.Stats().Connections + 1
	go e.relay.Accept(context.Background(), newIdleConn(), info)
	wait.For(e.t, "the connection registered", func() bool { return e.relay.Stats().Connections >= want })
}

func TestPagesEscapeUserData(t *testing.T) {
	e := newPagesEnv(t)
	const evil = `<script>alert(1)</script>`
	e.connect(relay.Info{Topic: "t/" + evil, Prefix: "session" + evil, CanRead: true, UserAgent: evil, Identity: relay.Identity{Subject: evil}})
	ck := e.session(RoleViewer, "u", evil)
	for _, path := range []string{"/ui/", "/ui/jobs/" + url.PathEscape(evil), "/ui/connections"} {
		body := e.do("GET", path, nil, ck).Body.String()
		if strings.Contains(body, evil) {
			t.Errorf("GET %s: user data unescaped in the page", path)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("GET %s: the escaped user data is missing", path)
		}
	}
	// The Overview counts the connection by prefix and topic.
	body := e.do("GET", "/ui/", nil, ck).Body.String()
	if !strings.Contains(body, `id="ov-connections" data-testid="ov-connections">1<`) {
		t.Error("the Overview does not count the connection")
	}
}

// --- /ui/api ---

func TestUIAPIRoleChecks(t *testing.T) {
	e := newPagesEnv(t)
	viewer := e.session(RoleViewer, "vic", "Vic")
	operator := e.session(RoleOperator, "olga", "Olga")
	exp := time.Now().Add(time.Hour).Unix()
	target := "/ui/api/bids/deny?bid=b42&exp=" + itoa(exp)

	w := e.do("POST", target, nil, viewer)
	if w.Code != http.StatusForbidden || decodeError(t, w).Code != "role_forbidden" {
		t.Fatalf("viewer POST /bids/deny: %d %s", w.Code, w.Body.String())
	}
	if n := len(e.api.calls()); n != 0 {
		t.Fatalf("the API was called %d times for a refused request", n)
	}

	w = e.do("POST", target, nil, operator)
	if w.Code != http.StatusNoContent {
		t.Fatalf("operator POST /bids/deny: %d %s", w.Code, w.Body.String())
	}
	call := e.api.last(t)
	if call.Method != "POST" || call.Path != "/bids/deny" || call.Query != "bid=b42&exp="+itoa(exp) {
		t.Errorf("the API got %+v", call)
	}
	if call.Cookie != "" {
		t.Errorf("the session cookie reached the API: %q", call.Cookie)
	}
	c := call.Claims
	if c.Subject != "olga" || !slices.Equal(c.Scopes, RoleOperator.Scopes()) {
		t.Errorf("token sub %q scopes %v", c.Subject, c.Scopes)
	}
	if ttl := time.Until(c.Expiry()); ttl > apiTokenTTL || ttl < apiTokenTTL-10*time.Second {
		t.Errorf("token lives %v, want %v", ttl, apiTokenTTL)
	}
	if !slices.Contains(c.Audience, testPublicURL) {
		t.Errorf("token audience %v", c.Audience)
	}

	// Cross-origin state changes are refused before anything else.
	w = e.do("POST", target, nil, operator, "Sec-Fetch-Site", "cross-site")
	if w.Code != http.StatusForbidden || decodeError(t, w).Code != "cross_origin_forbidden" {
		t.Errorf("cross-site POST: %d %s", w.Code, w.Body.String())
	}

	// Reads are the viewer's; admin-only paths are the admin's.
	if w := e.do("GET", "/ui/api/status", nil, viewer); w.Code != http.StatusOK {
		t.Errorf("viewer GET /status: %d %s", w.Code, w.Body.String())
	}
	if w := e.do("GET", "/ui/api/api/v1/audit?after=3", nil, operator); w.Code != http.StatusForbidden {
		t.Errorf("operator GET /api/v1/audit: %d", w.Code)
	}
	admin := e.session(RoleAdmin, "ada", "Ada")
	if w := e.do("GET", "/ui/api/api/v1/audit?after=3", nil, admin); w.Code != http.StatusOK {
		t.Errorf("admin GET /api/v1/audit: %d %s", w.Code, w.Body.String())
	}
	if w := e.do("DELETE", "/ui/api/api/v1/revocations/subject/a%2Fb", nil, operator); w.Code != http.StatusForbidden {
		t.Errorf("operator DELETE revocation: %d", w.Code)
	}
	if w := e.do("DELETE", "/ui/api/api/v1/revocations/subject/a%2Fb", nil, admin); w.Code != http.StatusNoContent {
		t.Fatalf("admin DELETE revocation: %d %s", w.Code, w.Body.String())
	}
	if call := e.api.last(t); call.Path != "/api/v1/revocations/subject/a/b" || call.RawPath != "/api/v1/revocations/subject/a%2Fb" {
		t.Errorf("the escaped value was not kept: %+v", call)
	}

	// Forgetting an agent is an operator's (the API checks jobs:admin).
	if w := e.do("DELETE", "/ui/api/api/v1/agents/c2", nil, viewer); w.Code != http.StatusForbidden || decodeError(t, w).Code != "role_forbidden" {
		t.Errorf("viewer DELETE agent: %d %s", w.Code, w.Body.String())
	}
	if w := e.do("DELETE", "/ui/api/api/v1/agents/c2", nil, operator); w.Code != http.StatusNoContent {
		t.Errorf("operator DELETE agent: %d %s", w.Code, w.Body.String())
	} else if call := e.api.last(t); call.Method != "DELETE" || call.Path != "/api/v1/agents/c2" || call.Claims.Subject != "olga" {
		t.Errorf("the API got %+v", call)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestUIAPIUnknownPaths(t *testing.T) {
	e := newPagesEnv(t)
	admin := e.session(RoleAdmin, "ada", "Ada")
	for _, c := range []struct{ method, path string }{
		{"GET", "/ui/api/metrics"},
		{"GET", "/ui/api/api/v1/secret"},
		{"GET", "/ui/api/bids/deny"},
		{"POST", "/ui/api/api/v1/agents"},
		{"PUT", "/ui/api/api/v1/jobs/j1/runs/a/files/f"},
		{"GET", "/ui/api/api/v1/jobs/%2E%2E/%2E%2E/metrics"},
		{"GET", "/ui/api/api/v1/jobs/"},
		{"POST", "/ui/api/api/v1/account/token/refresh"},
	} {
		w := e.do(c.method, c.path, nil, admin)
		if w.Code != http.StatusNotFound || decodeError(t, w).Code != "not_found" {
			t.Errorf("%s %s: %d %s", c.method, c.path, w.Code, w.Body.String())
		}
	}
	if n := len(e.api.calls()); n != 0 {
		t.Errorf("the API was called %d times", n)
	}
}

func TestUIAPIPassesAPIAnswers(t *testing.T) {
	e := newPagesEnv(t)
	operator := e.session(RoleOperator, "olga", "Olga")
	viewer := e.session(RoleViewer, "bob", "Bob")
	// The API's own error, verbatim.
	w := e.do("GET", "/ui/api/api/v1/jobs/j-alice", nil, viewer)
	if w.Code != http.StatusForbidden {
		t.Fatalf("another owner's job: %d", w.Code)
	}
	if got := decodeError(t, w); got.Code != "job_forbidden" || got.Message != "this job belongs to another owner" {
		t.Errorf("error %+v", got)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") {
		t.Errorf("proxied answer CSP %q", csp)
	}
	// A redirect of the API leads back into /ui/api/.
	w = e.do("POST", "/ui/api/api/v1/jobs", strings.NewReader(`{"action":"x"}`), operator, "Content-Type", "application/json")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/api/api/v1/jobs/j-new" {
		t.Errorf("create: %d Location %q", w.Code, w.Header().Get("Location"))
	}
}

func TestUIAPILocation(t *testing.T) {
	pub, _ := url.Parse("https://hub.example.org/sb")
	h := &Handler{cfg: Config{PublicURL: pub}, base: "/sb"}
	for in, want := range map[string]string{
		"https://hub.example.org/sb/api/v1/jobs/x":   "/sb/ui/api/api/v1/jobs/x",
		"https://hub.example.org/sb/api/v1/jobs?a=1": "/sb/ui/api/api/v1/jobs?a=1",
		"/api/v1/jobs/y": "/sb/ui/api/api/v1/jobs/y",
		"https://elsewhere.example/api/v1/jobs/x": "https://elsewhere.example/api/v1/jobs/x",
		"http://hub.example.org/sb/api/v1/jobs/x": "http://hub.example.org/sb/api/v1/jobs/x",
	} {
		if got := h.uiAPILocation(in); got != want {
			t.Errorf("%s → %s, want %s", in, got, want)
		}
	}
}

// --- live tokens ---

func TestLiveToken(t *testing.T) {
	e := newPagesEnv(t)
	alice := e.session(RoleViewer, "alice", "Alice")
	bob := e.session(RoleViewer, "bob", "Bob")
	olga := e.session(RoleOperator, "olga", "Olga")

	get := func(ck *http.Cookie, topic string) (*httptest.ResponseRecorder, *auth.Claims) {
		t.Helper()
		w := e.do("GET", "/ui/api/live-token?topic="+url.QueryEscape(topic), nil, ck)
		if w.Code != http.StatusOK {
			return w, nil
		}
		var lt liveToken
		if err := json.Unmarshal(w.Body.Bytes(), &lt); err != nil {
			t.Fatal(err)
		}
		if lt.Topic != topic || lt.Prefix != "session" {
			t.Errorf("answer %+v", lt)
		}
		c, err := e.api.verifier.Verify(lt.Token)
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		if err := auth.CheckRelayClaims(c); err != nil {
			t.Fatalf("not a relay token: %v", err)
		}
		if c.Topic != topic || c.Prefix != "session" {
			t.Errorf("token topic %q prefix %q", c.Topic, c.Prefix)
		}
		if ttl := time.Until(c.Expiry()); ttl > liveTokenTTL || ttl < liveTokenTTL-10*time.Second {
			t.Errorf("token lives %v", ttl)
		}
		if !lt.ExpiresAt.Equal(c.Expiry()) {
			t.Errorf("expires_at %v, token %v", lt.ExpiresAt, c.Expiry())
		}
		return w, c
	}
	for _, topic := range []string{"stats", "agents"} {
		_, c := get(bob, topic)
		if c == nil || !slices.Equal(c.Scopes, []string{"read", "relay:stats"}) || c.Subject != "bob" {
			t.Errorf("%s token: %+v", topic, c)
		}
	}
	if _, c := get(alice, "jobs/j-alice/log"); c == nil || !slices.Equal(c.Scopes, []string{"read"}) {
		t.Errorf("owner's log token: %+v", c)
	}
	if _, c := get(olga, "jobs/j-alice/log"); c == nil {
		t.Error("an operator cannot read another owner's job log")
	}
	w, _ := get(bob, "jobs/j-alice/log")
	if w.Code != http.StatusForbidden || decodeError(t, w).Code != "job_forbidden" {
		t.Errorf("another owner's job log: %d %s", w.Code, w.Body.String())
	}
	w, _ = get(bob, "jobs/nope/log")
	if w.Code != http.StatusNotFound || decodeError(t, w).Code != "job_not_found" {
		t.Errorf("unknown job's log: %d %s", w.Code, w.Body.String())
	}
	for _, bad := range []string{"", "expt42", "jobs//log", "jobs/a/b/log", "jobs/j-alice/log/x", "jobs/a b/log", "*", "stats/x"} {
		w, _ := get(olga, bad)
		if w.Code != http.StatusBadRequest || decodeError(t, w).Code != "invalid_topic" {
			t.Errorf("topic %q: %d %s", bad, w.Code, w.Body.String())
		}
	}
}

// --- history ---

// fakeTraffic is a trafficSource with settable counters.
type fakeTraffic struct {
	mu    sync.Mutex
	st    relay.Stats
	conns []relay.ConnStatus
}

func (f *fakeTraffic) Stats() relay.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Drops = map[string]uint64{}
	for k, v := range f.st.Drops {
		st.Drops[k] = v
	}
	return st
}

func (f *fakeTraffic) Connections() []relay.ConnStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.conns)
}

func (f *fakeTraffic) add(msgsIn, bytesIn, msgsOut, bytesOut, queueHead uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.MessagesIn += msgsIn
	f.st.BytesIn += bytesIn
	f.st.MessagesOut += msgsOut
	f.st.BytesOut += bytesOut
	if f.st.Drops == nil {
		f.st.Drops = map[string]uint64{}
	}
	f.st.Drops["queue_head"] += queueHead
}

func TestHistoryJSON(t *testing.T) {
	e := newPagesEnv(t)
	src := &fakeTraffic{conns: []relay.ConnStatus{
		{Info: relay.Info{Prefix: "session"}}, {Info: relay.Info{Prefix: "session"}}, {Info: relay.Info{Prefix: "shell"}},
	}}
	src.st.Connections, src.st.Topics = 3, 2
	now := time.Date(2025, 11, 23, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	hist := newHistory(src, clock)
	e.h.ui.mu.Lock()
	e.h.ui.hist = hist
	e.h.ui.mu.Unlock()

	// 20 minutes of samples: the first five fall out of the window.
	for i := range 121 {
		hist.sample()
		advance(historyInterval)
		src.add(100, 1000, 300, 3000, uint64(i%2))
	}
	w := e.do("GET", "/ui/api/history", nil, e.session(RoleViewer, "v", "v"))
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /ui/api/history: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	var got struct {
		IntervalSeconds int `json:"interval_seconds"`
		WindowSeconds   int `json:"window_seconds"`
		Now             time.Time
		Points          []struct {
			Time            time.Time         `json:"time"`
			Seconds         float64           `json:"seconds"`
			Connections     int               `json:"connections"`
			ByPrefix        map[string]int    `json:"by_prefix"`
			MessagesInPerS  float64           `json:"messages_in_per_s"`
			MessagesOutPerS float64           `json:"messages_out_per_s"`
			BytesInPerS     float64           `json:"bytes_in_per_s"`
			BytesOutPerS    float64           `json:"bytes_out_per_s"`
			Drops           map[string]uint64 `json:"drops"`
		}
		Totals struct {
			MessagesIn uint64            `json:"messages_in"`
			Drops      map[string]uint64 `json:"drops"`
		}
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.IntervalSeconds != 10 || got.WindowSeconds != 900 {
		t.Errorf("interval %d window %d", got.IntervalSeconds, got.WindowSeconds)
	}
	if n := len(got.Points); n != 90 {
		t.Fatalf("%d points, want 90 (15 minutes of 10 s)", n)
	}
	p := got.Points[len(got.Points)-1]
	if p.MessagesInPerS != 10 || p.MessagesOutPerS != 30 || p.BytesInPerS != 100 || p.BytesOutPerS != 300 || p.Seconds != 10 {
		t.Errorf("last point %+v", p)
	}
	if p.Connections != 3 || p.ByPrefix["session"] != 2 || p.ByPrefix["shell"] != 1 {
		t.Errorf("connections %d by prefix %v", p.Connections, p.ByPrefix)
	}
	if !p.Time.Equal(now) || !got.Now.Equal(now) {
		t.Errorf("last point at %v, now %v, want %v", p.Time, got.Now, now)
	}
	if first := got.Points[0].Time; now.Sub(first) > historyWindow {
		t.Errorf("first point %v is older than the window", first)
	}
	var drops uint64
	for _, p := range got.Points {
		drops += p.Drops["queue_head"]
	}
	if drops != 45 || got.Totals.Drops["queue_head"] != 60 || got.Totals.MessagesIn != 12100 {
		t.Errorf("drops in window %d, total %d, messages %d", drops, got.Totals.Drops["queue_head"], got.Totals.MessagesIn)
	}
}

func TestHistoryStartStop(t *testing.T) {
	e := newPagesEnv(t)
	e.h.Start(context.Background())
	e.h.Start(context.Background()) // again: nothing
	wait.For(t, "the sampler's first sample", func() bool {
		hist := e.h.historyOf()
		hist.mu.Lock()
		defer hist.mu.Unlock()
		return len(hist.samples) > 0
	})
	e.h.Stop()
	e.h.Stop()
	// Without a relay there is no history, but the endpoint answers.
	pub, _ := url.Parse(testPublicURL)
	h := &Handler{cfg: Config{PublicURL: pub, Now: time.Now}}
	h.Start(context.Background())
	h.Stop()
	w := httptest.NewRecorder()
	h.serveHistory(w, httptest.NewRequest("GET", "/ui/api/history", nil))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"points":[]`) {
		t.Errorf("no relay: %d %s", w.Code, w.Body.String())
	}
}

// --- static files ---

func TestStaticFiles(t *testing.T) {
	e := newPagesEnv(t)
	for name, ct := range map[string]string{
		"app.css":              "text/css; charset=utf-8",
		"icon.svg":             "image/svg+xml",
		"js/live.js":           "text/javascript; charset=utf-8",
		"js/pages/overview.js": "text/javascript; charset=utf-8",
	} {
		w := e.do("GET", staticURL(name), nil, nil)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != ct {
			t.Errorf("%s: %d %q", name, w.Code, w.Header().Get("Content-Type"))
		}
		if cc := w.Header().Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("%s: Cache-Control %q", name, cc)
		}
		w = e.do("GET", "/ui/static/"+name, nil, nil)
		if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-cache" || w.Header().Get("ETag") == "" {
			t.Errorf("unversioned %s: %d %q", name, w.Code, w.Header().Get("Cache-Control"))
		}
		if w2 := e.do("GET", "/ui/static/"+name, nil, nil, "If-None-Match", w.Header().Get("ETag")); w2.Code != http.StatusNotModified {
			t.Errorf("%s with its ETag: %d", name, w2.Code)
		}
	}
	if w := e.do("GET", "/ui/static/v-000000000000/app.css", nil, nil); w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("an old version: %d %q", w.Code, w.Header().Get("Cache-Control"))
	}
	for _, p := range []string{"/ui/static/nope.js", "/ui/static/" + staticVersion() + "/nope.css", "/ui/static/js"} {
		if w := e.do("GET", p, nil, nil); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d", p, w.Code)
		}
	}
}

// TestStaticModules checks what a browser would only find at run time:
// every page has its module, every relative import names an embedded
// file, and no module does what the CSP or our rules forbid.
func TestStaticModules(t *testing.T) {
	set := loadStatic()
	for _, name := range pageNames {
		if _, ok := set.files["js/pages/"+name+".js"]; !ok {
			t.Errorf("page %s has no module js/pages/%s.js", name, name)
		}
	}
	importRE := regexp.MustCompile(`(?m)^\s*import\s[^'"]*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]`)
	banned := []string{".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", "setInterval("}
	for name, f := range set.files {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		src := string(f.body)
		for _, m := range importRE.FindAllStringSubmatch(src, -1) {
			spec := m[1] + m[2]
			if !strings.HasPrefix(spec, "./") && !strings.HasPrefix(spec, "../") {
				t.Errorf("%s imports %q: only relative imports of our own modules", name, spec)
				continue
			}
			target := filepath.ToSlash(filepath.Join(filepath.Dir(name), spec))
			if _, ok := set.files[target]; !ok {
				t.Errorf("%s imports %q: no such file %s", name, spec, target)
			}
		}
		for _, b := range banned {
			if strings.Contains(src, b) {
				t.Errorf("%s uses %s", name, b)
			}
		}
	}
}

func TestFormatting(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 20: "5.0 MiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567", -1500: "-1,500"} {
		if got := formatCount(n); got != want {
			t.Errorf("formatCount(%d) = %q, want %q", n, got, want)
		}
	}
}
