package access

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

func fuzzHandler(f *testing.F) (*http.ServeMux, string) {
	key, _ := auth.NewHMACKey("HS256", []byte("0123456789abcdef0123456789abcdef"))
	pub, _ := url.Parse("http://relay.test")
	rs, _ := relay.NewServer(relay.Config{})
	h, err := New(Config{PublicURL: pub, NodeID: "n1", Verifier: auth.NewVerifier(key, pub.String(), auth.VerifierOptions{}), Relay: rs})
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	now := time.Now()
	tok, _ := key.Sign(auth.Claims{Topic: "expt/*", Prefix: "session", Scopes: []string{"read"},
		RegisteredClaims: jwt.RegisteredClaims{Audience: jwt.ClaimStrings{pub.String()}, ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}})
	return mux, tok
}

// FuzzAccess sends arbitrary paths, Authorization headers and codes to the
// access and websocket endpoints: no input may cause a panic or a 5xx, and
// every refusal must be a JSON error.
func FuzzAccess(f *testing.F) {
	mux, tok := fuzzHandler(f)
	f.Add("POST", "session/expt/a", "Bearer "+tok, "")
	f.Add("POST", "session/expt", tok, "")
	f.Add("GET", "session/expt/a", "", "AAAAAAAAAAAAAAAAAAAAAA.n1")
	f.Add("GET", "session/expt/a", "", "AAAA.n1")
	f.Add("OPTIONS", "session/x", "", "")
	f.Add("POST", "shell/%2e%2e", "Bearer x y", "")
	f.Add("POST", "session/a%00b", "bearer", "")
	f.Fuzz(func(t *testing.T, method, path, authz, code string) {
		switch method {
		case "GET", "POST", "OPTIONS":
		default:
			return
		}
		u := &url.URL{Path: "/" + path, RawQuery: url.Values{"code": {code}}.Encode()}
		req, err := http.NewRequest(method, "http://relay.test"+u.String(), nil)
		if err != nil {
			return
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		if method == "GET" {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		}
		if method == "OPTIONS" {
			req.Header.Set("Origin", "http://relay.test")
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: status %d: %s", method, path, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Code != http.StatusMethodNotAllowed && rec.Code != http.StatusNotFound {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" {
				t.Fatalf("%s %q: status %d without JSON error: %s", method, path, rec.Code, rec.Body)
			}
			if strings.Contains(rec.Body.String(), tok) || (len(code) > 8 && strings.Contains(rec.Body.String(), code)) {
				t.Fatalf("error body echoes a secret: %s", rec.Body)
			}
		}
	})
}

func TestMemoryCodeStoreTakeOnce(t *testing.T) {
	s := NewMemoryCodeStore(0, nil)
	code := wire.NewCode("n1")
	if err := s.Put(code, Grant{Topic: "t"}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	const takers = 16
	wins := make(chan bool, takers)
	for range takers {
		go func() { _, _, ok := s.Take(code); wins <- ok }()
	}
	n := 0
	for range takers {
		if <-wins {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d concurrent takes succeeded, want exactly 1", n)
	}
}

func TestMemoryCodeStoreBounded(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	s := NewMemoryCodeStore(10, clock)
	for i := range 10 {
		if err := s.Put(wire.NewCode("n1"), Grant{}, now.Add(time.Second)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if err := s.Put(wire.NewCode("n1"), Grant{}, now.Add(time.Second)); err != ErrCodeStoreFull {
		t.Fatalf("put beyond bound: %v", err)
	}
	now = now.Add(2 * time.Second) // all expired: the next put sweeps them
	if err := s.Put(wire.NewCode("n1"), Grant{}, now.Add(time.Second)); err != nil {
		t.Fatalf("put after expiry: %v", err)
	}
	if s.Len() != 1 {
		t.Fatalf("len %d after sweep, want 1", s.Len())
	}
}

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"192.0.2.1:5000", []string{"198.51.100.7"}, "192.0.2.1:5000"},            // untrusted peer: header ignored
		{"127.0.0.1:5000", []string{"198.51.100.7"}, "198.51.100.7"},              // trusted proxy
		{"127.0.0.1:5000", []string{"198.51.100.7, 10.1.2.3"}, "198.51.100.7"},    // chain of trusted proxies
		{"127.0.0.1:5000", []string{"203.0.113.9, 198.51.100.7"}, "198.51.100.7"}, // spoofed left entry ignored
		{"127.0.0.1:5000", []string{"junk"}, "127.0.0.1:5000"},
		{"127.0.0.1:5000", nil, "127.0.0.1:5000"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := ClientAddr(r, trusted); got != tc.want {
			t.Errorf("%s %v: %q, want %q", tc.remote, tc.xff, got, tc.want)
		}
	}
}

func TestMemoryCodeStorePerOwner(t *testing.T) {
	now := time.Now()
	s := NewMemoryCodeStore(0, func() time.Time { return now })
	var first string
	for i := range DefaultCodesPerOwner {
		code := wire.NewCode("n1")
		if i == 0 {
			first = code
		}
		if err := s.Put(code, Grant{Owner: "tok-a"}, now.Add(30*time.Second)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if err := s.Put(wire.NewCode("n1"), Grant{Owner: "tok-a"}, now.Add(30*time.Second)); err != ErrTooManyForOwner {
		t.Fatalf("over quota: %v", err)
	}
	if err := s.Put(wire.NewCode("n1"), Grant{Owner: "tok-b"}, now.Add(30*time.Second)); err != nil {
		t.Fatalf("another token: %v", err)
	}
	s.Take(first) // using a code frees its place
	if err := s.Put(wire.NewCode("n1"), Grant{Owner: "tok-a"}, now.Add(30*time.Second)); err != nil {
		t.Fatalf("after take: %v", err)
	}
	now = now.Add(time.Minute) // all expire: the next put frees every place
	if err := s.Put(wire.NewCode("n1"), Grant{Owner: "tok-a"}, now.Add(30*time.Second)); err != nil || s.Len() != 1 {
		t.Fatalf("after expiry: %v, len %d", err, s.Len())
	}
}
