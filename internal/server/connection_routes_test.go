package server

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/access"
)

// TestConnectionPathsSkipTheMuxAlike: routeErrors hands a connection-type
// path to the access handler itself (servePath) with the prefix and topic
// the ServeMux would have given it, and leaves what it cannot decide alike
// (other methods, paths with escapes of their own) to the mux.
func TestConnectionPathsSkipTheMuxAlike(t *testing.T) {
	type routed struct{ how, prefix, topic string }
	var got routed
	mux := http.NewServeMux()
	for _, m := range access.RouteMethods {
		mux.HandleFunc(m+" "+access.RoutePath, func(w http.ResponseWriter, r *http.Request) {
			got = routed{"mux " + r.Method, r.PathValue("prefix"), r.PathValue("topic")}
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { got = routed{how: "catch-all"} })
	isKnown := func(p string) bool { return p == "session" || p == "shell" }
	viaMux := routeErrors(mux, isKnown, func(http.ResponseWriter, *http.Request, string, string) bool { return false })
	direct := routeErrors(mux, isKnown, func(w http.ResponseWriter, r *http.Request, prefix, topic string) bool {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodOptions:
			got = routed{"mux " + r.Method, prefix, topic} // as the mux's GET pattern serves HEAD
			return true
		}
		return false
	})
	for _, method := range []string{"GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE"} {
		for _, target := range []string{
			"/session/a", "/session/a/b/c", "/session/a/", "/shell/x.y", "/session/a%20b", "/session/%61",
			"/session/a%2Fb", "/session%2Fx/y", "/sess%69on/t", "/session/a?code=x.n1", "/other/a", "/session/a%3Fb",
		} {
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
			if err != nil {
				t.Fatalf("%s %s: %v", method, target, err)
			}
			got = routed{}
			viaMux.ServeHTTP(httptest.NewRecorder(), r)
			want := got
			got = routed{}
			direct.ServeHTTP(httptest.NewRecorder(), r)
			if got != want {
				t.Errorf("%s %s: routed %+v, the mux: %+v", method, target, got, want)
			}
		}
	}
}

// TestShadowedConnectionRoutesRefused: a route under a connection type's
// prefix that the mux would prefer to the access endpoints' fails the
// server's construction (routeErrors would skip it).
func TestShadowedConnectionRoutesRefused(t *testing.T) {
	accessMux := func() *http.ServeMux {
		mux := http.NewServeMux()
		for _, m := range access.RouteMethods {
			mux.HandleFunc(m+" "+access.RoutePath, func(http.ResponseWriter, *http.Request) {})
		}
		return mux
	}
	isSession := func(p string) bool { return p == "session" }
	if err := checkConnectionRoutes(accessMux(), isSession); err != nil {
		t.Fatalf("the access routes alone: %v", err)
	}
	for _, pattern := range []string{"GET /session/t", "POST /session/{x}/u", "GET /session/{rest...}"} {
		mux := accessMux()
		mux.HandleFunc(pattern, func(http.ResponseWriter, *http.Request) {})
		if err := checkConnectionRoutes(mux, isSession); err == nil {
			t.Errorf("a route %q under /session/ was not refused", pattern)
		}
	}
}
