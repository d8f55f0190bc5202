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
	Owner       string   // identifies the token that asked (a digest), for per-token quotas
	Labels      []string // agent prefix: the labels the token allows; shared, never modified
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
// reveal usable codes. Each token (Grant.Owner) may hold a bounded number of
// pending codes, so one token holder cannot fill the store for everyone.
type MemoryCodeStore struct {
	max, maxPerOwner int
	now              func() time.Time

	mu      sync.Mutex
	codes   map[[sha256.Size]byte]pendingCode // guarded by mu
	owners  map[string]int                    // guarded by mu; pending codes per owner
	order   []orderEntry                      // guarded by mu; in Put order = expiry order (one TTL)
	orderAt int                               // guarded by mu; first live entry of order
}

type pendingCode struct {
	grant   Grant
	expires time.Time
}

type orderEntry struct {
	key     [sha256.Size]byte
	expires time.Time
}

// DefaultCodesPerOwner bounds the pending codes of one token.
const DefaultCodesPerOwner = 100

// ErrTooManyForOwner is returned by Put when the token already holds
// DefaultCodesPerOwner pending codes.
var ErrTooManyForOwner = errors.New("access: too many pending codes for this token")

// NewMemoryCodeStore returns a store holding at most max pending codes
// (0 means 100,000). now may be nil (time.Now).
func NewMemoryCodeStore(max int, now func() time.Time) *MemoryCodeStore {
	if max <= 0 {
		max = 100_000
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryCodeStore{max: max, maxPerOwner: DefaultCodesPerOwner, now: now,
		codes: make(map[[sha256.Size]byte]pendingCode), owners: make(map[string]int)}
}

// Put implements CodeStore. Codes are expected to share one lifetime, so
// insertion order is expiry order and expired codes are found at the front
// of a queue, never by scanning the map.
func (s *MemoryCodeStore) Put(code string, g Grant, expires time.Time) error {
	key := sha256.Sum256([]byte(code))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	if len(s.codes) >= s.max {
		return ErrCodeStoreFull
	}
	if g.Owner != "" && s.owners[g.Owner] >= s.maxPerOwner {
		return ErrTooManyForOwner
	}
	s.codes[key] = pendingCode{grant: g, expires: expires}
	if g.Owner != "" {
		s.owners[g.Owner]++
	}
	s.order = append(s.order, orderEntry{key: key, expires: expires})
	return nil
}

// Take implements CodeStore.
func (s *MemoryCodeStore) Take(code string) (Grant, time.Time, bool) {
	key := sha256.Sum256([]byte(code))
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.codes[key]
	if ok {
		s.deleteLocked(key, p)
	}
	return p.grant, p.expires, ok
}

func (s *MemoryCodeStore) deleteLocked(key [sha256.Size]byte, p pendingCode) {
	delete(s.codes, key)
	if o := p.grant.Owner; o != "" {
		if s.owners[o]--; s.owners[o] <= 0 {
			delete(s.owners, o)
		}
	}
}

// expireLocked drops the codes that expired before now, from the front of
// the queue.
func (s *MemoryCodeStore) expireLocked(now time.Time) {
	for s.orderAt < len(s.order) && now.After(s.order[s.orderAt].expires) {
		e := s.order[s.orderAt]
		if p, ok := s.codes[e.key]; ok && p.expires.Equal(e.expires) {
			s.deleteLocked(e.key, p)
		}
		s.order[s.orderAt] = orderEntry{}
		s.orderAt++
	}
	if s.orderAt > 1024 && s.orderAt > len(s.order)/2 {
		n := copy(s.order, s.order[s.orderAt:])
		s.order = s.order[:n]
		s.orderAt = 0
	}
}

// DeleteWhere removes every pending code whose grant matches, and returns
// how many it removed (used when a booking is revoked).
func (s *MemoryCodeStore) DeleteWhere(match func(*Grant) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, p := range s.codes {
		if match(&p.grant) {
			s.deleteLocked(k, p)
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
