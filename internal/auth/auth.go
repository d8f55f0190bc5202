// Package auth signs and verifies the relay's JSON Web Tokens.
//
// Tokens are JWS compact serialisations whose claims are compatible with
// practable/relay (topic, prefix, scopes, booking_id and the registered
// claims), plus sub, jti, topic patterns, agent and labels. The signing
// algorithm is fixed by the key configuration: the "alg" header of a token is
// only compared against it, never used to choose how to verify, so "none" and
// algorithm-confusion tokens are always refused.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/topic"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Scopes understood by the relay. practable/relay's names are kept as they
// are. This is the one list; docs/control.md ("Scopes") says what each
// allows on every endpoint and which dashboard role (internal/web) gets it.
const (
	ScopeRead  = "read"  // receive messages on a topic
	ScopeWrite = "write" // send messages on a topic
	// ScopeAdmin allows everything every other API scope allows (see
	// Claims.Allows), and what only an admin may do: read the audit log,
	// remove revocations (allow a denied booking), mint any scope for any
	// subject, reach the system's topics with any pattern.
	ScopeAdmin = "relay:admin"
	ScopeStats = "relay:stats" // read the status endpoints, metrics, revocations and the stats and agents topics
	// ScopeDeny denies bookings and revokes subjects and tokens; it never
	// undoes a revocation (that is ScopeAdmin's).
	ScopeDeny = "relay:deny"
	// ScopeMint mints tokens through the token API for the minter's own
	// subject: read and write on topics outside the system's, and scopes
	// the minter holds itself.
	ScopeMint = "relay:mint"
	// ScopeIssue is a booking system's: it mints connection tokens (read,
	// write) for any subject and booking through the token API, on topics
	// outside the system's.
	ScopeIssue = "relay:issue"
	// On the shell prefix (1:1 sessions), practable's names:
	ScopeHost   = "host"   // a host serving sessions on a topic
	ScopeClient = "client" // a user opening a session
	// Jobs (docs/jobs.md):
	ScopeAgent     = "agent"      // a host agent's control channel
	ScopeJobsRead  = "jobs:read"  // list and read jobs
	ScopeJobsWrite = "jobs:write" // create, change and delete jobs
	// ScopeJobsAdmin reads, changes, aborts and deletes every owner's jobs
	// and reaches every job's live log (topics under jobs/) with a pattern.
	ScopeJobsAdmin = "jobs:admin"
	// The dashboard's one-time login link (internal/web): it signs its
	// holder in once and is worth nothing to the API; it is never refreshed.
	ScopeLogin = "login"
)

// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
const DefaultLeeway = 5 * time.Second

// MaxTokenBytes bounds the size of a token accepted for verification.
const MaxTokenBytes = 8 << 10

// Claims are the claims of a relay token.
type Claims struct {
	// Topic is the topic name or pattern ("expt42/*", "*") this token grants.
	Topic string `json:"topic,omitempty"`
	// Prefix is the connection type: "session" for shared topics.
	Prefix string `json:"prefix,omitempty"`
	// Scopes lists what the bearer may do.
	Scopes []string `json:"scopes,omitempty"`
	// BookingID is the key under which an operator can revoke the token.
	BookingID string `json:"booking_id,omitempty"`
	// Agent is the id of a host agent (agent control channel tokens).
	Agent string `json:"agent,omitempty"`
	// Labels are the labels an agent may claim, as "key=value".
	Labels []string `json:"labels,omitempty"`
	// OrigIssuedAt is when the first token of a refresh chain was issued;
	// refreshing never extends a token beyond a configured lifetime from it.
	OrigIssuedAt *jwt.NumericDate `json:"orig_iat,omitempty"`

	jwt.RegisteredClaims
}

// HasScope reports whether the claims grant scope s.
func (c *Claims) HasScope(s string) bool {
	for _, have := range c.Scopes {
		if have == s {
			return true
		}
	}
	return false
}

// Allows reports whether the claims allow what the API scope s allows:
// they grant s, or relay:admin, which allows everything. Connection scopes
// (read, write, host, client, agent) are granted by the token's topic and
// prefix too, so they are checked with HasScope, never with Allows.
func (c *Claims) Allows(s string) bool {
	return c.HasScope(s) || c.HasScope(ScopeAdmin)
}

// Expiry returns the token's expiry time (zero if it has none).
func (c *Claims) Expiry() time.Time {
	if c.ExpiresAt == nil {
		return time.Time{}
	}
	return c.ExpiresAt.Time
}

// Error codes carried by *Error. They are the "code" of the JSON error the
// access endpoint answers with, so they are part of the wire contract and
// defined there (pkg/wire).
const (
	CodeMalformed     = string(wire.ErrorTokenMalformed)
	CodeAlgorithm     = string(wire.ErrorTokenAlgorithmRefused)
	CodeSignature     = string(wire.ErrorTokenSignatureInvalid)
	CodeExpired       = string(wire.ErrorTokenExpired)
	CodeNotYetValid   = string(wire.ErrorTokenNotYetValid)
	CodeAudience      = string(wire.ErrorTokenWrongAudience)
	CodeMissingClaim  = string(wire.ErrorTokenMissingClaim)
	CodeInvalidClaim  = string(wire.ErrorTokenInvalidClaim)
	CodeTokenTooLarge = string(wire.ErrorTokenTooLarge)
)

// Error is a verification failure. Its message never contains the token.
type Error struct {
	Code    string // one of the Code constants
	Message string // human readable, safe to show to the client
}

func (e *Error) Error() string { return "auth: " + e.Message }

func newError(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Key is an HMAC key with its algorithm fixed by configuration.
type Key struct {
	alg    string
	method jwt.SigningMethod
	secret []byte
}

// NewHMACKey returns a key for alg ("HS256", "HS384" or "HS512"; "" means
// HS256). The secret must be at least 16 bytes.
func NewHMACKey(alg string, secret []byte) (*Key, error) {
	if alg == "" {
		alg = "HS256"
	}
	var m jwt.SigningMethod
	switch alg {
	case "HS256":
		m = jwt.SigningMethodHS256
	case "HS384":
		m = jwt.SigningMethodHS384
	case "HS512":
		m = jwt.SigningMethodHS512
	default:
		return nil, fmt.Errorf("auth: algorithm %q not supported (HS256, HS384, HS512)", alg)
	}
	if len(secret) < 16 {
		return nil, errors.New("auth: secret shorter than 16 bytes")
	}
	return &Key{alg: alg, method: m, secret: append([]byte(nil), secret...)}, nil
}

// Algorithm returns the configured algorithm name.
func (k *Key) Algorithm() string { return k.alg }

// Sign returns the compact serialisation of claims signed with k.
func (k *Key) Sign(c Claims) (string, error) {
	s, err := jwt.NewWithClaims(k.method, c).SignedString(k.secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return s, nil
}

// Verifier checks tokens for one audience.
type Verifier struct {
	key      *Key
	audience string // without trailing "/"
	leeway   time.Duration
	now      func() time.Time
	verified verifiedCache
}

// VerifierOptions configure a Verifier. The zero value of each field is a
// sensible default.
type VerifierOptions struct {
	// Leeway tolerated on time claims; 0 means DefaultLeeway, negative means none.
	Leeway time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// NewVerifier returns a verifier accepting tokens signed by key whose "aud"
// contains audience (a trailing "/" on either side is ignored).
func NewVerifier(key *Key, audience string, opts VerifierOptions) *Verifier {
	v := &Verifier{key: key, audience: strings.TrimSuffix(audience, "/"), leeway: opts.Leeway, now: opts.Now}
	if v.leeway == 0 {
		v.leeway = DefaultLeeway
	} else if v.leeway < 0 {
		v.leeway = 0
	}
	if v.now == nil {
		v.now = time.Now
	}
	v.verified.m = make(map[[sha256.Size]byte]verifiedToken)
	return v
}

// Leeway returns the clock skew the verifier tolerates.
func (v *Verifier) Leeway() time.Duration { return v.leeway }

// Audience returns the audience the verifier requires.
func (v *Verifier) Audience() string { return v.audience }

var errWrongAlg = errors.New("wrong algorithm")

// Verify parses and checks a token: algorithm, signature, exp (required),
// nbf, iat and audience. It does not check relay-specific claims; see
// CheckRelayClaims. Every failure is an *Error. The returned Claims and
// their time claims are the caller's, but their slices are shared with later
// calls for the same token and must not be modified.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if len(token) > MaxTokenBytes {
		return nil, newError(CodeTokenTooLarge, "token longer than %d bytes", MaxTokenBytes)
	}
	sum := sha256.Sum256([]byte(token))
	now := v.now()
	if c := v.verified.get(sum, now); c != nil {
		return c, nil
	}
	var gotAlg string
	claims := new(Claims)
	p := jwt.NewParser(
		jwt.WithLeeway(v.leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.now),
	)
	_, err := p.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		gotAlg, _ = t.Header["alg"].(string)
		// The algorithm is pinned by configuration: compare, never choose.
		if gotAlg != v.key.alg {
			return nil, errWrongAlg
		}
		return v.key.secret, nil
	})
	switch {
	case err == nil:
	case errors.Is(err, errWrongAlg):
		return nil, newError(CodeAlgorithm, "token algorithm %q refused; this server accepts %s only", truncate(gotAlg, 16), v.key.alg)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, newError(CodeMalformed, "token is not a well-formed JWT")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, newError(CodeSignature, "token signature is invalid")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, newError(CodeMissingClaim, "token has no exp claim")
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, newError(CodeExpired, "token has expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return nil, newError(CodeNotYetValid, "token is not valid yet")
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return nil, newError(CodeInvalidClaim, "token claims are invalid")
	default:
		return nil, newError(CodeMalformed, "token could not be parsed")
	}
	if !v.audienceOK(claims.Audience) {
		return nil, newError(CodeAudience, "token audience does not include %s", v.audience)
	}
	from, until := v.validity(claims)
	v.verified.put(sum, len(token), claims, from, until, now)
	return claims, nil
}

// validity returns the interval in which the parser accepts claims' time
// claims: from the later of nbf and iat, less the leeway, to exp plus the
// leeway (exp is required, so claims that verified have one).
func (v *Verifier) validity(c *Claims) (from, until time.Time) {
	for _, d := range []*jwt.NumericDate{c.NotBefore, c.IssuedAt} {
		if d != nil && d.Add(-v.leeway).After(from) {
			from = d.Add(-v.leeway)
		}
	}
	return from, c.ExpiresAt.Add(v.leeway)
}

// Bounds of the verified-token cache. Decoded claims take up to about three
// times the token's length (many short strings), so these keep it under
// roughly 8 MiB even when someone able to mint tokens fills it with large
// ones; a typical relay token is 300-600 bytes.
const (
	maxVerified           = 4096    // tokens
	maxVerifiedBytes      = 2 << 20 // sum of their lengths
	maxVerifiedTokenBytes = 2 << 10 // longer tokens are verified every time
)

// verifiedCache remembers tokens that verified, by their SHA-256, with the
// interval in which they stay valid. Clients present the same token again
// on every reconnect, and a full verification costs ≈ 12 µs and 67
// allocations, most of it the JSON decoding of the claims, whose nested
// decoders also grow each new connection goroutine's stack (profile in
// docs/BENCHMARKS.md). Only a verification of the same bytes under the same
// key, audience and leeway is remembered, so a hit is exactly what parsing
// again would decide, inside the interval; outside it the token is parsed
// again and gets its precise error. Revocations are checked by the callers
// after Verify, so they are not affected. Failures are never cached.
type verifiedCache struct {
	mu    sync.Mutex
	m     map[[sha256.Size]byte]verifiedToken
	bytes int // sum of the cached tokens' lengths
}

type verifiedToken struct {
	claims      *Claims // never modified once stored
	size        int     // the token's length
	from, until time.Time
}

// get returns a copy of the claims of the token whose hash is sum if it
// verified before and now is inside its interval, or nil. The copy has its
// own time claims; its slices are shared (Verify's contract).
func (c *verifiedCache) get(sum [sha256.Size]byte, now time.Time) *Claims {
	c.mu.Lock()
	e, ok := c.m[sum]
	c.mu.Unlock()
	if !ok || now.Before(e.from) || !now.Before(e.until) {
		return nil
	}
	return copyClaims(e.claims)
}

// copyClaims copies c and the time claims it points to.
func copyClaims(c *Claims) *Claims {
	cp := *c
	cp.ExpiresAt, cp.NotBefore, cp.IssuedAt = copyDate(c.ExpiresAt), copyDate(c.NotBefore), copyDate(c.IssuedAt)
	cp.OrigIssuedAt = copyDate(c.OrigIssuedAt)
	return &cp
}

func copyDate(d *jwt.NumericDate) *jwt.NumericDate {
	if d == nil {
		return nil
	}
	v := *d
	return &v
}

// put remembers claims of a token of size bytes. When a bound would be
// passed it first forgets the tokens that expired, then arbitrary ones
// until an eighth of each bound is free.
func (c *verifiedCache) put(sum [sha256.Size]byte, size int, claims *Claims, from, until, now time.Time) {
	if size > maxVerifiedTokenBytes {
		return
	}
	stored := copyClaims(claims) // the caller owns claims and may change it
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[sum]; ok {
		c.bytes -= old.size
		delete(c.m, sum)
	}
	if len(c.m) >= maxVerified || c.bytes+size > maxVerifiedBytes {
		for k, e := range c.m {
			if !now.Before(e.until) {
				c.bytes -= e.size
				delete(c.m, k)
			}
		}
		for k, e := range c.m {
			if len(c.m) < maxVerified-maxVerified/8 && c.bytes+size <= maxVerifiedBytes-maxVerifiedBytes/8 {
				break
			}
			c.bytes -= e.size
			delete(c.m, k)
		}
	}
	c.m[sum] = verifiedToken{claims: stored, size: size, from: from, until: until}
	c.bytes += size
}

func (v *Verifier) audienceOK(aud jwt.ClaimStrings) bool {
	for _, a := range aud {
		if strings.TrimSuffix(a, "/") == v.audience {
			return true
		}
	}
	return false
}

// CheckRelayClaims checks the claims a relay connection needs: a topic that is
// a valid name or pattern, a prefix and at least one scope.
func CheckRelayClaims(c *Claims) error {
	switch {
	case c.Topic == "":
		return newError(CodeMissingClaim, "token has no topic claim")
	case c.Prefix == "":
		return newError(CodeMissingClaim, "token has no prefix claim")
	case len(c.Scopes) == 0:
		return newError(CodeMissingClaim, "token has no scopes claim")
	}
	if err := topic.ValidPattern(c.Topic); err != nil {
		return newError(CodeInvalidClaim, "token topic: %v", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// NewClaims returns claims with the registered fields a relay token needs
// filled in: audience, issued-at and not-before now, expiry now+ttl, and a
// random token id. The caller adds topic, prefix, scopes and the rest.
func NewClaims(audience string, now time.Time, ttl time.Duration) Claims {
	var id [12]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails on supported platforms
	return Claims{RegisteredClaims: jwt.RegisteredClaims{
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		ID:        base64.RawURLEncoding.EncodeToString(id[:]),
	}}
}
