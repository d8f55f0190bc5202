package web

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"time"

	"switchboard/internal/relay"
)

// Cookie names.
const (
	// SessionCookie carries the session id, encrypted.
	SessionCookie = "sb_session"
	// LoginCookie carries the state of a login in progress (state, nonce,
	// PKCE verifier, target page), encrypted, for LoginStateTTL.
	LoginCookie = "sb_login"
)

// LoginStateTTL is how long a user has to complete a login at the identity
// provider.
const LoginStateTTL = 10 * time.Minute

// sessionPurgeEvery is how often Create sweeps expired sessions out of the
// map (Get drops an expired session it meets at once).
const sessionPurgeEvery = time.Minute

// sessionStore keeps the sessions in memory. A restart forgets them all,
// which logs every user out (docs/dashboard.md).
type sessionStore struct {
	now func() time.Time

	mu        sync.Mutex
	m         map[string]*Session // guarded by mu; by Session.ID
	lastPurge time.Time           // guarded by mu
}

func newSessionStore(now func() time.Time) *sessionStore {
	return &sessionStore{now: now, m: map[string]*Session{}}
}

// Create stores s under a new random id (128 bits) and returns a copy of it.
func (st *sessionStore) Create(s Session, ttl time.Duration) *Session {
	now := st.now()
	s.ID = randomID(16)
	s.Created, s.Expires = now, now.Add(ttl)
	st.mu.Lock()
	defer st.mu.Unlock()
	if now.Sub(st.lastPurge) >= sessionPurgeEvery {
		st.purgeLocked(now)
		st.lastPurge = now
	}
	st.m[s.ID] = &s
	c := s
	return &c
}

// Get returns a copy of the session with this id, or nil if there is none
// or it has expired.
func (st *sessionStore) Get(id string) *Session {
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[id]
	if !ok {
		return nil
	}
	if !now.Before(s.Expires) {
		delete(st.m, id)
		return nil
	}
	c := *s
	return &c
}

// Delete forgets the session with this id.
func (st *sessionStore) Delete(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.m, id)
}

// DeleteWhere forgets every session match reports true for and returns
// copies of them. match runs under the store's lock: it must not call back
// into the store.
func (st *sessionStore) DeleteWhere(match func(*Session) bool) []Session {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []Session
	for id, s := range st.m {
		if match(s) {
			delete(st.m, id)
			out = append(out, *s)
		}
	}
	return out
}

// Len returns the number of sessions held, expired or not.
func (st *sessionStore) Len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}

func (st *sessionStore) purgeLocked(now time.Time) {
	for id, s := range st.m {
		if !now.Before(s.Expires) {
			delete(st.m, id)
		}
	}
}

// randomID returns n random bytes, base64url without padding.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

// cookieSealer encrypts and authenticates cookie values with AES-256-GCM
// and a random nonce. The cookie's name is the additional data, so a value
// sealed for one cookie is refused in another.
type cookieSealer struct {
	aead cipher.AEAD
}

func newCookieSealer(key []byte) (*cookieSealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &cookieSealer{aead: aead}, nil
}

// maxCookieValue bounds the size of a cookie value we try to open.
const maxCookieValue = 4096

var errBadCookie = errors.New("web: cookie does not decrypt")

// Seal returns the cookie value carrying plaintext.
func (c *cookieSealer) Seal(name string, plaintext []byte) string {
	nonce := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(plaintext)+c.aead.Overhead())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(c.aead.Seal(nonce, nonce, plaintext, []byte(name)))
}

// Open returns the plaintext of a value made by Seal for the same name.
func (c *cookieSealer) Open(name, value string) ([]byte, error) {
	if len(value) > maxCookieValue {
		return nil, errBadCookie
	}
	b, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(b) < c.aead.NonceSize()+c.aead.Overhead() {
		return nil, errBadCookie
	}
	n := c.aead.NonceSize()
	out, err := c.aead.Open(nil, b[:n], b[n:], []byte(name))
	if err != nil {
		return nil, errBadCookie
	}
	return out, nil
}

// setSessionCookie gives the browser the encrypted id of s.
func (h *Handler) setSessionCookie(w http.ResponseWriter, s *Session) {
	http.SetCookie(w, &http.Cookie{
		Name:     SessionCookie,
		Value:    h.sealer.Seal(SessionCookie, []byte(s.ID)),
		Path:     "/",
		MaxAge:   int(h.cfg.SessionTTL / time.Second),
		HttpOnly: true,
		Secure:   h.secure,
		SameSite: http.SameSiteLaxMode,
	})
}

// clearCookie tells the browser to forget a cookie.
func (h *Handler) clearCookie(w http.ResponseWriter, name, path string) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: "", Path: path, MaxAge: -1,
		HttpOnly: true, Secure: h.secure, SameSite: http.SameSiteLaxMode,
	})
}

// sessionOf returns the live session the request's cookie names, or nil.
// present reports whether the request carried a session cookie at all.
func (h *Handler) sessionOf(r *http.Request) (s *Session, present bool) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return nil, false
	}
	id, err := h.sealer.Open(SessionCookie, ck.Value)
	if err != nil {
		return nil, true
	}
	s = h.sessions.Get(string(id))
	if s == nil {
		return nil, true
	}
	if h.subjectRevoked(s.Subject) {
		// The user was revoked (by a revocation this node has not enforced
		// through CloseWhere yet): the login ends with it.
		h.sessions.Delete(s.ID)
		h.log.Info("web: session ended, its subject is revoked", "subject", s.Subject)
		return nil, true
	}
	return s, true
}

// subjectRevoked reports whether a revocation of subject is in force.
func (h *Handler) subjectRevoked(subject string) bool {
	if h.cfg.Revocations == nil {
		return false
	}
	_, denied := h.cfg.Revocations.Denied("", subject, "")
	return denied
}

// CloseWhere ends, at once, every dashboard session whose identity m
// matches, and returns how many it ended: it implements control.ConnCloser,
// so every node's revocation enforcer calls it, as it closes the relay's
// connections. A session's identity is its subject and nothing else (no
// booking, no token id), so revoking a subject ends that user's sessions
// and a booking or token revocation ends none. The session's cookie stops
// working, and lifting the revocation later does not bring the session
// back. The dashboard holds no connections of its own: a page's live
// views are relay connections under the user's subject, which the same
// revocation closes with code. code is therefore unused; reason is logged.
func (h *Handler) CloseWhere(m relay.IdentityMatch, code relay.CloseCode, reason string) int {
	ended := h.sessions.DeleteWhere(func(s *Session) bool { return m.Matches(relay.Identity{Subject: s.Subject}) })
	for _, s := range ended {
		h.log.Info("web: session ended", "subject", s.Subject, "provider", s.Provider, "reason", reason)
	}
	return len(ended)
}
