package access

import (
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// Grant is what a one-time code stands for: the checked result of an access
// request, bound to one topic and prefix.
type Grant struct {
	Topic    string
	Prefix   string
	CanRead  bool
	CanWrite bool
	// Identity is the token's booking, subject and id: what revocations
	// match, here (DeleteWhere) as on the connection the code opens.
	relay.Identity
	TokenExpiry time.Time
	Scopes      []string // as in the token; shared, never modified
	System      bool     // a system topic: read-only for everyone
	Role        string   // the endpoint's (Permit.Role; shell: host, client or session)
	Session     string   // the endpoint's (shell, role session: the session id)
	Owner       string   // identifies the token that asked (a digest), for per-token quotas
	Labels      []string // the endpoint's (Permit.Labels; agent: the labels it may claim); shared, never modified
	Local       bool     // the endpoint's (Permit.Local): issued where the access request arrived
	// Peer marks a code issued by an endpoint for the other side of a
	// connection it admitted (Handler.IssuePeer): its connection is not
	// counted again against the limits of its token and subject.
	Peer bool
}

// CodeStore keeps pending one-time codes (made and parsed by pkg/wire:
// NewCode, ParseCode). Implementations must make Take
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

// DeleteWhere removes every pending code whose grant's identity m matches,
// and returns how many it removed (a revocation's enforcement).
func (s *MemoryCodeStore) DeleteWhere(m relay.IdentityMatch) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, p := range s.codes {
		if m.Matches(p.grant.Identity) {
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
