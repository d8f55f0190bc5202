package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func mustKey(t testing.TB, alg string) *Key {
	t.Helper()
	k, err := NewHMACKey(alg, secret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func goodClaims(now time.Time) Claims {
	return Claims{
		Topic: "demo", Prefix: "session", Scopes: []string{"read", "write"}, BookingID: "b1",
		RegisteredClaims: jwt.RegisteredClaims{
			Audience:  jwt.ClaimStrings{"http://relay.test"},
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
		},
	}
}

func codeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key := mustKey(t, "HS256")
	v := NewVerifier(key, "http://relay.test/", VerifierOptions{Now: func() time.Time { return now }})
	sign := func(c Claims) string {
		s, err := key.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rs256, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, goodClaims(now)).SignedString(rsaKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256, _ := jwt.NewWithClaims(jwt.SigningMethodES256, goodClaims(now)).SignedString(ecKey)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims(now)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs512, _ := mustKey(t, "HS512").Sign(goodClaims(now))
	other, _ := NewHMACKey("HS256", []byte("another secret of enough length"))
	badSig, _ := other.Sign(goodClaims(now))

	mod := func(f func(*Claims)) string { c := goodClaims(now); f(&c); return sign(c) }
	cases := []struct {
		name, token, code string
	}{
		{"good", sign(goodClaims(now)), ""},
		{"audience with slash", mod(func(c *Claims) { c.Audience = jwt.ClaimStrings{"http://relay.test/"} }), ""},
		{"one of several audiences", mod(func(c *Claims) { c.Audience = jwt.ClaimStrings{"x", "http://relay.test"} }), ""},
		{"within leeway", mod(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-3 * time.Second)) }), ""},
		{"empty", "", CodeMalformed},
		{"garbage", "not.a.jwt", CodeMalformed},
		{"two parts", "abc.def", CodeMalformed},
		{"alg none", none, CodeAlgorithm},
		{"alg RS256", rs256, CodeAlgorithm},
		{"alg ES256", es256, CodeAlgorithm},
		{"alg HS512", hs512, CodeAlgorithm},
		{"bad signature", badSig, CodeSignature},
		{"expired", mod(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute)) }), CodeExpired},
		{"no exp", mod(func(c *Claims) { c.ExpiresAt = nil }), CodeMissingClaim},
		{"nbf future", mod(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) }), CodeNotYetValid},
		{"iat future", mod(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(now.Add(time.Minute)) }), CodeNotYetValid},
		{"wrong audience", mod(func(c *Claims) { c.Audience = jwt.ClaimStrings{"http://evil.test"} }), CodeAudience},
		{"no audience", mod(func(c *Claims) { c.Audience = nil }), CodeAudience},
		{"too large", strings.Repeat("a", MaxTokenBytes+1), CodeTokenTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: the second answer may come from the verified-token cache.
			c, err := v.Verify(tc.token)
			if got := codeOf(err); got != tc.code || (tc.code != "" && err == nil) {
				t.Fatalf("Verify: code %q (err %v), want %q", got, err, tc.code)
			}
			c, err = v.Verify(tc.token)
			if got := codeOf(err); got != tc.code || (tc.code != "" && err == nil) {
				t.Fatalf("Verify again: code %q (err %v), want %q", got, err, tc.code)
			}
			if tc.code == "" && c.Topic != "demo" {
				t.Fatalf("claims not decoded: %+v", c)
			}
			if err != nil && strings.Contains(err.Error(), tc.token) && tc.token != "" {
				t.Fatalf("error message contains the token")
			}
		})
	}
}

// TestVerifyCachedToken checks that a token verified once (and so cached)
// is still refused outside its validity, by exactly the parser's rules, and
// that a caller's changes to its claims do not reach later callers.
func TestVerifyCachedToken(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	now := start
	key := mustKey(t, "HS256")
	v := NewVerifier(key, "http://relay.test", VerifierOptions{Now: func() time.Time { return now }})
	c := goodClaims(start)
	c.NotBefore = jwt.NewNumericDate(start.Add(time.Minute))
	tok, err := key.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at   time.Duration
		code string
	}{
		{0, CodeNotYetValid},
		{time.Minute - DefaultLeeway, ""}, // nbf less the leeway
		{time.Minute, ""},
		{time.Minute - DefaultLeeway - time.Second, CodeNotYetValid}, // before nbf again, after a success
		{time.Hour + DefaultLeeway - time.Second, ""},
		{time.Hour + DefaultLeeway, CodeExpired},
		{time.Hour + DefaultLeeway - time.Second, ""},
	}
	for _, st := range steps {
		now = start.Add(st.at)
		got, err := v.Verify(tok)
		if code := codeOf(err); code != st.code || (st.code != "" && err == nil) {
			t.Fatalf("at +%v: code %q (err %v), want %q", st.at, code, err, st.code)
		}
		if err == nil {
			if got.Topic != "demo" || got.BookingID != "b1" {
				t.Fatalf("at +%v: claims %+v", st.at, got)
			}
			// Must not reach the next caller:
			got.Topic, got.BookingID = "changed", "changed"
			got.ExpiresAt.Time = start.Add(time.Second)
			got.NotBefore = nil
		}
	}
	if _, err := NewVerifier(key, "http://other.test", VerifierOptions{Now: func() time.Time { return now }}).Verify(tok); codeOf(err) != CodeAudience {
		t.Fatalf("another audience's verifier: err %v, want %s", err, CodeAudience)
	}
}

// TestVerifiedCacheBounded fills the cache beyond its bound.
func TestVerifiedCacheBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key := mustKey(t, "HS256")
	v := NewVerifier(key, "http://relay.test", VerifierOptions{Now: func() time.Time { return now }})
	for i := range maxVerified + 100 {
		c := goodClaims(now)
		c.BookingID = strings.Repeat("b", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()
		tok, err := key.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	v.verified.mu.Lock()
	n := len(v.verified.m)
	v.verified.mu.Unlock()
	if n > maxVerified || n < maxVerified/2 {
		t.Fatalf("cache holds %d tokens, want at most %d (and not emptied)", n, maxVerified)
	}

	// Large tokens: the byte budget binds before the count, and tokens
	// over the per-token limit are verified but not kept.
	verifiedBytes := func() (int, int) {
		v.verified.mu.Lock()
		defer v.verified.mu.Unlock()
		sum := 0
		for _, e := range v.verified.m {
			sum += e.size
		}
		if sum != v.verified.bytes {
			t.Fatalf("the cache counts %d bytes, its entries hold %d", v.verified.bytes, sum)
		}
		return len(v.verified.m), sum
	}
	for i := range 3000 {
		c := goodClaims(now)
		c.BookingID = strings.Repeat("x", 1200) + time.Duration(i).String()
		tok, err := key.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	if _, b := verifiedBytes(); b > maxVerifiedBytes || b < maxVerifiedBytes/2 {
		t.Fatalf("cache holds %d bytes of tokens, want at most %d (and not emptied)", b, maxVerifiedBytes)
	}
	c := goodClaims(now)
	c.BookingID = strings.Repeat("y", maxVerifiedTokenBytes)
	big, err := key.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := verifiedBytes()
	for range 2 {
		if got, err := v.Verify(big); err != nil || got.BookingID != c.BookingID {
			t.Fatalf("a token over the cache's limit: %v", err)
		}
	}
	if after, _ := verifiedBytes(); after != before {
		t.Fatalf("a token of %d bytes was cached", len(big))
	}
}

func BenchmarkVerify(b *testing.B) {
	key := mustKey(b, "HS256")
	v := NewVerifier(key, "http://relay.test", VerifierOptions{})
	tok, err := key.Sign(goodClaims(time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCheckRelayClaims(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		mod  func(*Claims)
		code string
	}{
		{"ok", func(*Claims) {}, ""},
		{"pattern", func(c *Claims) { c.Topic = "expt/*" }, ""},
		{"no topic", func(c *Claims) { c.Topic = "" }, CodeMissingClaim},
		{"no prefix", func(c *Claims) { c.Prefix = "" }, CodeMissingClaim},
		{"no scopes", func(c *Claims) { c.Scopes = nil }, CodeMissingClaim},
		{"bad topic", func(c *Claims) { c.Topic = "a//b" }, CodeInvalidClaim},
	} {
		c := goodClaims(now)
		tc.mod(&c)
		if got := codeOf(CheckRelayClaims(&c)); got != tc.code {
			t.Errorf("%s: code %q, want %q", tc.name, got, tc.code)
		}
	}
}

func TestNewHMACKey(t *testing.T) {
	if _, err := NewHMACKey("RS256", secret); err == nil {
		t.Error("RS256 accepted as HMAC algorithm")
	}
	if _, err := NewHMACKey("HS256", []byte("short")); err == nil {
		t.Error("short secret accepted")
	}
	k, err := NewHMACKey("", secret)
	if err != nil || k.Algorithm() != "HS256" {
		t.Errorf("default algorithm: %v %v", k, err)
	}
}

// FuzzVerify feeds arbitrary strings and mutated tokens to the verifier: it
// must never panic and must only accept tokens signed with the key.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := NewHMACKey("HS256", secret)
	good, _ := key.Sign(goodClaims(now))
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256"}`)) + ".e30.x")
	v := NewVerifier(key, "http://relay.test", VerifierOptions{Now: func() time.Time { return now }})
	f.Fuzz(func(t *testing.T, tok string) {
		_, err := v.Verify(tok)
		if err == nil {
			// Accepted: the signature must be an HMAC-SHA256 of the first
			// two parts under our secret, recomputed independently here.
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("accepted token with %d parts", len(parts))
			}
			mac := hmac.New(sha256.New, secret)
			mac.Write([]byte(parts[0] + "." + parts[1]))
			sig, decErr := base64.RawURLEncoding.DecodeString(parts[2])
			if decErr != nil || !hmac.Equal(sig, mac.Sum(nil)) {
				t.Fatalf("accepted token not signed with the key: %q", tok)
			}
			return
		}
		if codeOf(err) == "" {
			t.Fatalf("error without code: %v", err)
		}
	})
}
