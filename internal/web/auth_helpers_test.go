package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/internal/web"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a dashboard served over loopback, with a browser (a client with
// a cookie jar that does not follow redirects).
type env struct {
	t       *testing.T
	h       *web.Handler
	srv     *httptest.Server
	url     string
	clock   *clock
	store   store.Store
	key     *auth.Key
	cfg     web.Config
	browser *http.Client
}

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func openStore(t *testing.T, dir string) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "sb.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newEnv starts a dashboard; tweak adjusts its config (PublicURL, Key,
// Verifier, Store, CookieKey and Now are filled in first).
func newEnv(t *testing.T, tweak func(*web.Config)) *env {
	t.Helper()
	e := &env{t: t, clock: newClock()}
	e.srv = httptest.NewUnstartedServer(nil)
	e.url = "http://" + e.srv.Listener.Addr().String()
	pub, _ := url.Parse(e.url)
	var err error
	if e.key, err = auth.NewHMACKey("HS256", testSecret); err != nil {
		t.Fatal(err)
	}
	if e.store == nil {
		e.store = openStore(t, t.TempDir())
	}
	e.cfg = web.Config{
		PublicURL: pub, Key: e.key, Store: e.store, Now: e.clock.Now,
		Verifier:  auth.NewVerifier(e.key, pub.String(), auth.VerifierOptions{Now: e.clock.Now}),
		CookieKey: []byte("abcdefghijklmnopqrstuvwxyz012345"),
	}
	if tweak != nil {
		tweak(&e.cfg)
	}
	e.store = e.cfg.Store
	if e.h, err = web.New(e.cfg); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	e.h.Register(mux)
	// Test pages: the session as JSON, behind login and roles.
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := web.SessionFrom(r.Context())
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"subject": s.Subject, "role": s.Role.String(), "name": s.Name, "email": s.Email, "provider": s.Provider})
	})
	mux.Handle("GET /test/whoami", e.h.RequireLogin(whoami))
	mux.Handle("GET /test/operator", e.h.RequireRole(web.RoleOperator, whoami))
	mux.Handle("POST /test/change", e.h.Protect(e.h.RequireRole(web.RoleOperator, whoami)))
	e.srv.Config.Handler = mux
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	e.browser = newBrowser(t)
	return e
}

func newBrowser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:           jar,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// response is a read response.
type response struct {
	status   int
	header   http.Header
	body     string
	location string
}

func do(t *testing.T, c *http.Client, method, u string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b), location: resp.Header.Get("Location")}
}

func (e *env) get(path string) response { return do(e.t, e.browser, "GET", e.abs(path), nil) }

func (e *env) abs(u string) string {
	if strings.HasPrefix(u, "/") {
		return e.url + u
	}
	return u
}

// follow GETs u and follows redirects (across hosts) until a page that is
// not a redirect, returning it and the URLs visited.
func (e *env) follow(u string) (response, []string) {
	e.t.Helper()
	var visited []string
	for range 10 {
		u = e.abs(u)
		visited = append(visited, u)
		r := do(e.t, e.browser, "GET", u, nil)
		if r.status < 300 || r.status > 399 {
			return r, visited
		}
		u = r.location
	}
	e.t.Fatalf("too many redirects: %v", visited)
	return response{}, nil
}

// loginWithLink signs the browser in with a fresh login link.
func (e *env) loginWithLink() {
	e.t.Helper()
	link, _, err := e.h.LoginLink()
	if err != nil {
		e.t.Fatal(err)
	}
	r := e.get(link)
	if r.status != http.StatusSeeOther || r.location != "/ui/" {
		e.t.Fatalf("login link: %d %q %s", r.status, r.location, r.body)
	}
}

func (e *env) whoami() map[string]any {
	e.t.Helper()
	r := e.get("/test/whoami")
	if r.status != http.StatusOK {
		e.t.Fatalf("whoami: %d %s %s", r.status, r.location, r.body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var v struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("not a JSON error: %q", body)
	}
	return v.Error.Code
}

func sessionCookie(t *testing.T, resp response) *http.Cookie {
	t.Helper()
	for _, line := range resp.header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err == nil && c.Name == web.SessionCookie {
			return c
		}
	}
	t.Fatalf("no %s cookie set; headers %v", web.SessionCookie, resp.header)
	return nil
}
