package server

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/ratelimit"
)

// TestKeepAliveShedUnderDescriptorPressure: past three quarters of the
// descriptor budget, answers close their connections (a two-step client's
// idle access connection beside its websocket took a descriptor each, and
// 714 of a 10,000-client storm were refused 503); below it, and for a
// websocket handshake, connections stay as they are.
func TestKeepAliveShedUnderDescriptorPressure(t *testing.T) {
	const budget = 100
	var open atomic.Int64
	h := limitRequests(ratelimit.New[netip.Addr](1e6, 1e6, time.Now), &open, budget, nil, &refusals{},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	for _, tc := range []struct {
		open    int64
		upgrade bool
		closes  bool
	}{
		{open: 10}, {open: budget * 3 / 4},
		{open: budget*3/4 + 1, closes: true}, {open: budget, closes: true},
		{open: budget, upgrade: true},
	} {
		open.Store(tc.open)
		r := httptest.NewRequest("POST", "/session/t", nil)
		r.RemoteAddr = "127.0.0.1:1234"
		if tc.upgrade {
			r.Header.Set("Upgrade", "websocket")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if got := w.Header().Get("Connection") == "close"; got != tc.closes || w.Code != http.StatusOK {
			t.Errorf("%d of %d open, upgrade %v: %d, Connection %q; want close %v", tc.open, budget, tc.upgrade, w.Code, w.Header().Get("Connection"), tc.closes)
		}
	}
}
