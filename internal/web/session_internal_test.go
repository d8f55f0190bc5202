package web

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
)

// mustCreate stores a session for ttl, failing t if the store refuses.
func (ss *sessionStore) mustCreate(t testing.TB, s Session, ttl time.Duration) *Session {
	t.Helper()
	out, err := ss.Create(t.Context(), s, ttl)
	if err != nil {
		t.Fatalf("create session of %s: %v", s.Subject, err)
	}
	return out
}

func openSQLite(t testing.TB) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), sqlite.FileName), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestSessionStorePurgesExpired: a session is not returned once expired,
// and Create removes the expired sessions from the store at most every
// sessionPurgeEvery.
func TestSessionStorePurgesExpired(t *testing.T) {
	db := openSQLite(t)
	now := time.Unix(1_700_000_000, 0)
	st := newSessionStore(db, func() time.Time { return now }, slog.New(slog.DiscardHandler))
	stored := func(id string) bool { // whether the row is there, expired or not
		t.Helper()
		_, found, err := db.Session(t.Context(), id, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	a := st.mustCreate(t, Session{Subject: "a", Role: RoleViewer}, time.Hour)
	b := st.mustCreate(t, Session{Subject: "b", Role: RoleAdmin}, 3*time.Hour)
	if len(a.ID) != 22 { // 128 bits, base64url
		t.Fatalf("id %q", a.ID)
	}
	if got, err := st.Get(t.Context(), b.ID); err != nil || got == nil || *got != *b {
		t.Fatalf("Get(b) = %+v, %v; want %+v", got, err, b)
	}
	now = now.Add(2 * time.Hour)
	if got, err := st.Get(t.Context(), a.ID); got != nil || err != nil {
		t.Fatalf("expired session returned: %+v, %v", got, err)
	}
	if !stored(a.ID) {
		t.Fatal("the expired session is gone before any purge: the test does not see purges")
	}
	st.mustCreate(t, Session{Subject: "c", Role: RoleViewer}, time.Hour) // purges: the last was 2 h ago
	if stored(a.ID) || !stored(b.ID) {
		t.Fatalf("after a purge: a stored %v (want false), b stored %v (want true)", stored(a.ID), stored(b.ID))
	}
	d := st.mustCreate(t, Session{Subject: "d", Role: RoleViewer}, time.Second)
	now = now.Add(2 * time.Second)
	st.mustCreate(t, Session{Subject: "e", Role: RoleViewer}, time.Hour) // within sessionPurgeEvery: no purge
	if !stored(d.ID) {
		t.Fatal("Create purged again within sessionPurgeEvery")
	}
}

func TestCookieSealer(t *testing.T) {
	s, err := newCookieSealer([]byte("abcdefghijklmnopqrstuvwxyz012345"))
	if err != nil {
		t.Fatal(err)
	}
	v := s.Seal(SessionCookie, []byte("id-1"))
	if v == s.Seal(SessionCookie, []byte("id-1")) {
		t.Fatal("same value twice: the nonce is not random")
	}
	if got, err := s.Open(SessionCookie, v); err != nil || string(got) != "id-1" {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := s.Open(LoginCookie, v); err == nil {
		t.Fatal("a session cookie's value opened as the login cookie")
	}
	for _, bad := range []string{"", "x", v[:len(v)-1], "!!" + v} {
		if _, err := s.Open(SessionCookie, bad); err == nil {
			t.Fatalf("%q opened", bad)
		}
	}
}

func TestClaimStrings(t *testing.T) {
	claims := map[string]any{
		"groups":        []any{"a", 1, "b"},
		"role":          "admin",
		"realm_access":  map[string]any{"roles": []any{"ops"}},
		"https://x.y/g": []any{"dotted"},
		"weird":         42.0,
	}
	for name, want := range map[string][]string{
		"groups": {"a", "b"}, "role": {"admin"}, "realm_access.roles": {"ops"}, "https://x.y/g": {"dotted"}, "weird": nil,
	} {
		got, found := claimStrings(claims, name)
		if !found || len(got) != len(want) || (len(want) > 0 && got[0] != want[0]) {
			t.Errorf("%s: %v %v, want %v", name, got, found, want)
		}
	}
	if _, found := claimStrings(claims, "missing.path"); found {
		t.Error("missing claim found")
	}
}
