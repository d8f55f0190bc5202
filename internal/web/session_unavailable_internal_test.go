package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// cuttableSessions is a store whose session calls fail, once cut, as a
// node's do when it cannot reach the database.
type cuttableSessions struct {
	store.Store
	cut atomic.Bool
}

func (c *cuttableSessions) Session(ctx context.Context, id string, now time.Time) (store.Session, bool, error) {
	if c.cut.Load() {
		return store.Session{}, false, fmt.Errorf("test: %w: cut off", store.ErrUnavailable)
	}
	return c.Store.Session(ctx, id, now)
}

func (c *cuttableSessions) DeleteSession(ctx context.Context, id string) (bool, error) {
	if c.cut.Load() {
		return false, fmt.Errorf("test: %w: cut off", store.ErrUnavailable)
	}
	return c.Store.DeleteSession(ctx, id)
}

// TestSessionStoreUnavailable: while the database cannot be reached, a
// dashboard request is answered 503 store_unavailable (the error page for
// a page load) and its cookie is kept, rather than logging the user out;
// a logout that cannot delete the session says so and keeps the cookie
// too. Once the database answers again, the session works.
func TestSessionStoreUnavailable(t *testing.T) {
	db := &cuttableSessions{Store: openSQLite(t)}
	pub, _ := url.Parse("http://127.0.0.1:1")
	key, err := auth.NewHMACKey("HS256", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{PublicURL: pub, Key: key, Verifier: auth.NewVerifier(key, pub.String(), auth.VerifierOptions{}),
		Store: db, CookieKey: []byte("abcdefghijklmnopqrstuvwxyz012345")})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	mux.Handle("GET /ui/api/whoami", h.RequireLogin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(SessionFrom(r.Context()).Subject))
	})))
	s := h.sessions.mustCreate(t, Session{Subject: "oidc:alice", Role: RoleAdmin}, time.Hour)
	ck := &http.Cookie{Name: SessionCookie, Value: h.sealer.Seal(SessionCookie, []byte(s.ID))}
	do := func(method, target string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, nil)
		r.AddCookie(ck)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	if w := do("GET", "/ui/api/whoami"); w.Code != http.StatusOK || w.Body.String() != "oidc:alice" {
		t.Fatalf("before the cut: %d %q", w.Code, w.Body)
	}

	db.cut.Store(true)
	for _, tc := range []struct{ method, target string }{{"GET", "/ui/api/whoami"}, {"POST", "/logout"}} {
		w := do(tc.method, tc.target)
		var body struct{ Error struct{ Code string } }
		if w.Code != http.StatusServiceUnavailable || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Error.Code != "store_unavailable" {
			t.Errorf("%s %s while the store is cut: %d %s, want 503 store_unavailable", tc.method, tc.target, w.Code, w.Body)
		}
		if got := w.Header().Values("Set-Cookie"); len(got) != 0 {
			t.Errorf("%s %s while the store is cut changed cookies: %q", tc.method, tc.target, got)
		}
	}
	if w := do("GET", "/ui/"); w.Code != http.StatusServiceUnavailable || w.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("a page load while the store is cut: %d %q, want the 503 error page", w.Code, w.Header().Get("Content-Type"))
	}

	db.cut.Store(false)
	if w := do("GET", "/ui/api/whoami"); w.Code != http.StatusOK {
		t.Fatalf("after the cut: %d %s", w.Code, w.Body)
	}
	if w := do("POST", "/logout"); w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d %s", w.Code, w.Body)
	}
	if w := do("GET", "/ui/api/whoami"); w.Code != http.StatusUnauthorized {
		t.Fatalf("after logout: %d %s, want 401", w.Code, w.Body)
	}
}
