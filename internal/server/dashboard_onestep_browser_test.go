package server

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/auth"
)

// TestBrowserLiveViewsConnectInOneStep: the dashboard's live views open
// their websockets in one step, the token in the bearer subprotocol (no
// access request), in a real Chromium.
func TestBrowserLiveViewsConnectInOneStep(t *testing.T) {
	e := startDashboard(t, nil)
	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/", "overview")
	tb.waitLive()
	st, b := e.api("GET", "/metrics", e.token("stats", auth.ScopeStats), "")
	if st != 200 {
		t.Fatalf("metrics: %d", st)
	}
	ok := func(stage string) int {
		m := regexp.MustCompile(`switchboard_access_total\{outcome="ok",stage="` + stage + `"\} (\d+)`).FindSubmatch(b)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	if ok("connect") < 2 || ok("access") != 0 || ok("exchange") != 0 {
		t.Fatalf("live views: %d one-step connects, %d access requests, %d code exchanges; want ≥ 2 (stats and agents), 0, 0",
			ok("connect"), ok("access"), ok("exchange"))
	}
}
