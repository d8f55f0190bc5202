package web

import (
	"testing"
	"time"
)

func TestSessionStorePurgesExpired(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	st := newSessionStore(func() time.Time { return now })
	a := st.Create(Session{Subject: "a"}, time.Hour)
	st.Create(Session{Subject: "b"}, 3*time.Hour)
	if len(a.ID) != 22 { // 128 bits, base64url
		t.Fatalf("id %q", a.ID)
	}
	now = now.Add(2 * time.Hour)
	if st.Get(a.ID) != nil {
		t.Fatal("expired session returned")
	}
	st.Create(Session{Subject: "c"}, time.Hour) // sweeps
	st.m[a.ID] = &Session{ID: a.ID, Expires: now.Add(-time.Second)}
	now = now.Add(2 * sessionPurgeEvery)
	st.Create(Session{Subject: "d"}, time.Hour)
	if n := st.Len(); n != 3 {
		t.Fatalf("%d sessions held, want 3 (b, c, d)", n)
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
