package server_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/internal/web"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// dashboardBrowser is a browser that keeps its session cookie itself
// rather than in a cookie jar: a jar ignores ports, so it could not tell
// which node set a cookie.
type dashboardBrowser struct {
	t      *testing.T
	http   *http.Client
	cookie *http.Cookie // the session cookie, nil before a login
}

func newDashboardBrowser(t *testing.T) *dashboardBrowser {
	return &dashboardBrowser{t: t, http: &http.Client{Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request with the session cookie and returns the status.
func (b *dashboardBrowser) do(method, u string) int {
	b.t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	if b.cookie != nil {
		req.AddCookie(b.cookie)
	}
	resp, err := b.http.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// login follows a login link of node s and keeps the session cookie it
// sets.
func (b *dashboardBrowser) login(s *servertest.Server) {
	b.t.Helper()
	link, _, err := s.Dashboard().LoginLink()
	if err != nil {
		b.t.Fatal(err)
	}
	resp, err := b.http.Get(link)
	if err != nil {
		b.t.Fatal(err)
	}
	resp.Body.Close()
	b.cookie = nil
	for _, c := range resp.Cookies() {
		if c.Name == web.SessionCookie && c.Value != "" {
			b.cookie = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || b.cookie == nil {
		b.t.Fatalf("%s's login link: %d, session cookie %v", s.Config.NodeID, resp.StatusCode, b.cookie)
	}
}

// dashboard reports the status of node s's dashboard with the session
// cookie: 200 with a live session, 303 (to the login page) without.
func (b *dashboardBrowser) dashboard(s *servertest.Server) int {
	b.t.Helper()
	return b.do("GET", s.URL+"/ui/")
}

// sharedSessionNode starts a node called id on the shared store st and
// the bus network.
func sharedSessionNode(t *testing.T, network *membus.Network, st *sqlite.Store, id string) *servertest.Server {
	t.Helper()
	bus, err := network.Join(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() }) // after the node's shutdown: an injected bus is the caller's
	return servertest.Start(t, func(c *server.Config, d *server.Deps) { c.NodeID, d.Bus, d.Store = id, bus, st })
}

// TestDashboardSessionsAreSharedThroughTheStore: two nodes on one store
// (as a cluster's nodes share PostgreSQL) need no sticky sessions. A login
// on a works on b; a logout on b ends it on a at once; a session outlives
// a restart of its node; revoking the subject on one node ends its
// sessions on every node at once, for good (lifting the revocation brings
// none back). With sessions in each node's memory, b did not know a's
// session and a restart logged everyone out.
func TestDashboardSessionsAreSharedThroughTheStore(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), sqlite.FileName), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // registered first: runs after the nodes' shutdowns
	network, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := sharedSessionNode(t, network, st, "a"), sharedSessionNode(t, network, st, "b")
	browser := newDashboardBrowser(t)

	browser.login(a)
	for _, s := range []*servertest.Server{a, b} {
		if got := browser.dashboard(s); got != http.StatusOK {
			t.Fatalf("%s's dashboard with a session made on a: %d, want 200", s.Config.NodeID, got)
		}
	}
	if got := browser.do("POST", b.URL+"/logout"); got != http.StatusSeeOther {
		t.Fatalf("logout on b: %d", got)
	}
	for _, s := range []*servertest.Server{a, b} {
		if got := browser.dashboard(s); got != http.StatusSeeOther {
			t.Fatalf("%s's dashboard with a session logged out on b: %d, want 303 to the login page", s.Config.NodeID, got)
		}
	}

	// A restart keeps the session: a stops, c starts on the same store.
	browser.login(a)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c := sharedSessionNode(t, network, st, "c")
	if got := browser.dashboard(c); got != http.StatusOK {
		t.Fatalf("the session after its node's restart: %d, want 200", got)
	}

	// Revoking the subject on c ends the session in the store before the
	// API answers: b refuses it at once, whether or not the bus event has
	// reached it yet.
	api := func(s *servertest.Server, method, path, body string) int {
		t.Helper()
		cl := s.Claims("", auth.ScopeAdmin)
		cl.Subject, cl.Prefix = "operator", ""
		req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.Sign(t, cl))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := api(c, "POST", "/api/v1/revocations", `{"kind":"subject","value":"`+web.LinkSubject+`","ttl":"1h"}`); got != http.StatusOK {
		t.Fatalf("revoke on c: %d", got)
	}
	if got := browser.dashboard(b); got != http.StatusSeeOther {
		t.Fatalf("b's dashboard with a session whose subject c revoked: %d, want 303", got)
	}
	if got := api(c, "DELETE", "/api/v1/revocations/subject/"+url.PathEscape(web.LinkSubject), ""); got != http.StatusNoContent {
		t.Fatalf("lift on c: %d", got)
	}
	userToken := func() string {
		cl := b.Claims("t1", auth.ScopeRead)
		cl.Subject = web.LinkSubject
		return b.Sign(t, cl)
	}
	wait.For(t, "b admits the subject again", func() bool {
		conn, err := client.Dial(ctx, b.URL, "t1", userToken(), nil)
		if err != nil {
			return false
		}
		conn.CloseNow()
		return true
	})
	for _, s := range []*servertest.Server{b, c} {
		if got := browser.dashboard(s); got != http.StatusSeeOther {
			t.Fatalf("%s's dashboard with the revoked session after the lift: %d, want 303", s.Config.NodeID, got)
		}
	}
}

// TestDashboardSessionsInAClusterOnPostgreSQL: the same without sticky
// sessions in a real cluster (embedded NATS, one PostgreSQL): a login on
// n1 works on n2, and a logout on n2 ends it on n1 at once.
func TestDashboardSessionsInAClusterOnPostgreSQL(t *testing.T) {
	nodes := servertest.StartCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	browser := newDashboardBrowser(t)
	browser.login(n1)
	if got := browser.dashboard(n2); got != http.StatusOK {
		t.Fatalf("n2's dashboard with a session made on n1: %d, want 200", got)
	}
	if got := browser.do("POST", n2.URL+"/logout"); got != http.StatusSeeOther {
		t.Fatalf("logout on n2: %d", got)
	}
	if got := browser.dashboard(n1); got != http.StatusSeeOther {
		t.Fatalf("n1's dashboard with a session logged out on n2: %d, want 303 to the login page", got)
	}
}
