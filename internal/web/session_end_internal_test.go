package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
)

// subjectMatcher matches as a subject revocation does.
func subjectMatcher(subject string) relay.IdentityMatch {
	return relay.IdentityMatch{Kind: relay.IdentitySubject, Value: subject}
}

// TestCloseWhereEndsTheSessionsOfARevokedSubject: a revocation recorded
// by the control plane ends the matching sessions at once, not when they
// are next used: the store no longer holds them, and their cookies stop
// working even once the revocation is lifted (here: with no Denier at
// all). Other users' sessions, and booking or token revocations, leave
// sessions alone.
func TestCloseWhereEndsTheSessionsOfARevokedSubject(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "sb.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pub, _ := url.Parse("http://127.0.0.1:1")
	key, err := auth.NewHMACKey("HS256", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{PublicURL: pub, Key: key, Verifier: auth.NewVerifier(key, pub.String(), auth.VerifierOptions{}),
		Store: st, CookieKey: []byte("abcdefghijklmnopqrstuvwxyz012345")})
	if err != nil {
		t.Fatal(err)
	}
	page := h.RequireLogin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	status := func(s *Session) int {
		r := httptest.NewRequest("GET", "/ui/", nil)
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: h.sealer.Seal(SessionCookie, []byte(s.ID))})
		w := httptest.NewRecorder()
		page.ServeHTTP(w, r)
		return w.Code
	}
	mallory1 := h.sessions.mustCreate(t, Session{Subject: "github:mallory", Provider: "github", Role: RoleOperator}, time.Hour)
	mallory2 := h.sessions.mustCreate(t, Session{Subject: "github:mallory", Provider: "github", Role: RoleOperator}, time.Hour)
	alice := h.sessions.mustCreate(t, Session{Subject: "oidc:alice", Provider: "oidc", Role: RoleAdmin}, time.Hour)
	for _, s := range []*Session{mallory1, mallory2, alice} {
		if got := status(s); got != http.StatusOK {
			t.Fatalf("%s before any revocation: %d", s.Subject, got)
		}
	}

	// Booking and token revocations match no session (a session carries
	// neither), nor does another subject.
	for _, match := range []relay.IdentityMatch{
		{Kind: relay.IdentityBooking, Value: "b1"},
		{Kind: relay.IdentityToken, Value: "t1"},
		subjectMatcher("github:somebody-else"),
	} {
		if n := h.CloseWhere(match, relay.CloseDenied, "revoked"); n != 0 {
			t.Fatalf("a revocation that covers no session ended %d", n)
		}
	}
	if n := h.CloseWhere(subjectMatcher("github:mallory"), relay.CloseDenied, "subject revoked"); n != 2 {
		t.Fatalf("revoking mallory ended %d sessions, want 2", n)
	}
	for _, s := range []*Session{mallory1, mallory2} {
		if got, err := h.sessions.Get(t.Context(), s.ID); got != nil || err != nil {
			t.Fatalf("the store still holds a session of the revoked subject")
		}
		if got := status(s); got != http.StatusSeeOther {
			t.Fatalf("a revoked subject's cookie: %d, want 303 to the login page", got)
		}
	}
	if n := h.CloseWhere(subjectMatcher("github:mallory"), relay.CloseDenied, "subject revoked"); n != 0 {
		t.Fatalf("revoking mallory again (as another node does) ended %d sessions, want 0", n)
	}
	if got := status(alice); got != http.StatusOK {
		t.Fatalf("alice after mallory's revocation: %d", got)
	}
}
