package access

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"time"
)

// Grant is what a one-time code stands for: the checked result of an access
// request, bound to one topic and prefix.
type Grant struct {
	Topic       string
	Prefix      string
	CanRead     bool
	CanWrite    bool
	BookingID   string
	Subject     string
	TokenID     string
	TokenExpiry time.Time
	Scopes      []string // as in the token; shared, never modified
	System      bool     // a system topic: read-only for everyone
	Role        string   // shell prefix: host, client or session
	Session     string   // shell prefix, role session: the session id
}

// CodeStore keeps pending one-time codes. Implementations must make Take
// atomic: of any number of concurrent Takes of one code, at most one
// succeeds.
type CodeStore interface {
	// Put stores g under code until expires. It fails when the store is full.
	Put(code string, g Grant, expires time.Time) error
	// Take removes code and returns its grant and expiry. ok is false if
	// the code is unknown or was already taken. An expired code may be
	// returned (the caller checks expiry, to tell the client why).
	Take(code string) (g Grant, expires time.Time, ok bool)
}

// ErrCodeStoreFull is returned by Put when too many codes are pending.
var ErrCodeStoreFull = errors.New("access: too many pending codes")

// codeRandomBytes is the entropy of a code: 128 bits.
const codeRandomBytes = 16

// codeRandomLen is the length of the random part, base64url without padding.
var codeRandomLen = base64.RawURLEncoding.EncodedLen(codeRandomBytes)

// NewCode returns a fresh code naming nodeID: 128 random bits in base64url,
// ".", then the node id.
func NewCode(nodeID string) string {
	var b [codeRandomBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b[:]) + "." + nodeID
}

// ParseCode checks the form of a code and returns the node id it names.
func ParseCode(code string) (nodeID string, ok bool) {
	random, node, found := strings.Cut(code, ".")
	if !found || len(random) != codeRandomLen || !ValidNodeID(node) {
		return "", false
	}
	for i := 0; i < len(random); i++ {
		c := random[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	return node, true
}

// ValidNodeID reports whether id is a usable node id: 1 to 32 characters of
// [a-z0-9-], so it is safe in a code, a URL, a NATS subject and a load
// balancer rule.
func ValidNodeID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// MemoryCodeStore is a CodeStore in memory. Codes are kept under their
// SHA-256 digest, so that the map lookup's timing depends on the digest, not
// on how much of a guessed code is right, and so a memory dump does not
// reveal usable codes.
type MemoryCodeStore struct {
	max int
	now func() time.Time

	mu    sync.Mutex
	codes map[[sha256.Size]byte]pendingCode // guarded by mu
	puts  int                               // guarded by mu; puts since the last sweep
}

type pendingCode struct {
	grant   Grant
	expires time.Time
}

// NewMemoryCodeStore returns a store holding at most max pending codes
// (0 means 100,000). now may be nil (time.Now).
func NewMemoryCodeStore(max int, now func() time.Time) *MemoryCodeStore {
	if max <= 0 {
		max = 100_000
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryCodeStore{max: max, now: now, codes: make(map[[sha256.Size]byte]pendingCode)}
}

// Put implements CodeStore.
func (s *MemoryCodeStore) Put(code string, g Grant, expires time.Time) error {
	key := sha256.Sum256([]byte(code))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	if len(s.codes) >= s.max || s.puts >= 1024 {
		s.sweepLocked()
	}
	if len(s.codes) >= s.max {
		return ErrCodeStoreFull
	}
	s.codes[key] = pendingCode{grant: g, expires: expires}
	return nil
}

// Take implements CodeStore.
func (s *MemoryCodeStore) Take(code string) (Grant, time.Time, bool) {
	key := sha256.Sum256([]byte(code))
	s.mu.Lock()
	p, ok := s.codes[key]
	delete(s.codes, key)
	s.mu.Unlock()
	return p.grant, p.expires, ok
}

// DeleteWhere removes every pending code whose grant matches, and returns
// how many it removed (used when a booking is revoked).
func (s *MemoryCodeStore) DeleteWhere(match func(*Grant) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, p := range s.codes {
		if match(&p.grant) {
			delete(s.codes, k)
			n++
		}
	}
	return n
}

// Len returns the number of pending codes, expired or not.
func (s *MemoryCodeStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.codes)
}

// sweepLocked drops expired codes. Called every 1024 puts, so its cost is
// amortised over the puts and memory stays bounded by the issue rate.
func (s *MemoryCodeStore) sweepLocked() {
	now := s.now()
	for k, p := range s.codes {
		if now.After(p.expires) {
			delete(s.codes, k)
		}
	}
	s.puts = 0
}
