package web

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
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

// sessionPurgeEvery is how often Create removes expired sessions from the
// store (Get never returns an expired session, purged or not).
const sessionPurgeEvery = time.Minute

// sessionEndTimeout bounds the store call of CloseWhere, which has no
// request to bound it.
const sessionEndTimeout = 5 * time.Second

// sessionStore keeps the dashboard's sessions in the node's store
// (store.SessionStore): SQLite for one node, PostgreSQL shared by every
// node of a cluster. Any node therefore opens a session made on another,
// a logout or a revocation on one node ends the session on all of them,
// and a restart keeps everyone logged in. There is no cache: every
// dashboard request reads its session from the store (one indexed
// lookup; see BenchmarkSessionGet), so nothing can outlive its deletion.
type sessionStore struct {
	st  store.SessionStore
	now func() time.Time
	log *slog.Logger

	lastPurge atomic.Int64 // Unix nanoseconds of the last purge begun by Create
}

func newSessionStore(st store.SessionStore, now func() time.Time, log *slog.Logger) *sessionStore {
	return &sessionStore{st: st, now: now, log: log}
}

// Create stores s under a new random id (128 bits) for ttl and returns a
// copy of it with its id and times.
func (ss *sessionStore) Create(ctx context.Context, s Session, ttl time.Duration) (*Session, error) {
	now := ss.now().UTC().Truncate(time.Microsecond) // as the store keeps it
	s.ID = randomID(16)
	s.Created, s.Expires = now, now.Add(ttl)
	err := ss.st.CreateSession(ctx, s.ID, store.Session{Subject: s.Subject, Name: s.Name, Email: s.Email,
		Provider: s.Provider, Role: s.Role.String(), CreatedAt: s.Created, ExpiresAt: s.Expires})
	if err != nil {
		return nil, err
	}
	if last := ss.lastPurge.Load(); now.UnixNano()-last >= int64(sessionPurgeEvery) && ss.lastPurge.CompareAndSwap(last, now.UnixNano()) {
		if n, err := ss.st.PurgeExpiredSessions(ctx, now); err != nil {
			ss.log.Warn("web: purging expired sessions failed", "err", err)
		} else if n > 0 {
			ss.log.Debug("web: expired sessions purged", "sessions", n)
		}
	}
	return &s, nil
}

// Get returns the session with this id, or nil if there is none or it
// has expired. A stored session whose role this binary does not know is
// treated as absent.
func (ss *sessionStore) Get(ctx context.Context, id string) (*Session, error) {
	st, found, err := ss.st.Session(ctx, id, ss.now())
	if err != nil || !found {
		return nil, err
	}
	role, err := ParseRole(st.Role)
	if err != nil {
		ss.log.Warn("web: a stored session has an unknown role: treated as logged out", "subject", st.Subject, "err", err)
		return nil, nil
	}
	return &Session{ID: id, Subject: st.Subject, Name: st.Name, Email: st.Email, Provider: st.Provider, Role: role,
		Created: st.CreatedAt, Expires: st.ExpiresAt}, nil
}

// Delete ends the session with this id (if there is one).
func (ss *sessionStore) Delete(ctx context.Context, id string) error {
	_, err := ss.st.DeleteSession(ctx, id)
	return err
}

// DeleteSubject ends every session of subject and reports how many there
// were: 0 if another node ended them first.
func (ss *sessionStore) DeleteSubject(ctx context.Context, subject string) (int, error) {
	return ss.st.DeleteSubjectSessions(ctx, subject)
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

// sessionIDOf returns the session id the request's cookie carries, or ""
// if it carries none that decrypts. present reports whether the request
// carried a session cookie at all.
func (h *Handler) sessionIDOf(r *http.Request) (id string, present bool) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return "", false
	}
	b, err := h.sealer.Open(SessionCookie, ck.Value)
	if err != nil {
		return "", true
	}
	return string(b), true
}

// sessionOf returns the live session the request's cookie names, or nil.
// present reports whether the request carried a session cookie at all. An
// error is the store's (it wraps store.ErrUnavailable when the database
// cannot answer): whether the session is live is then unknown.
func (h *Handler) sessionOf(r *http.Request) (s *Session, present bool, err error) {
	id, present := h.sessionIDOf(r)
	if id == "" {
		return nil, present, nil
	}
	if s, err = h.sessions.Get(r.Context(), id); s == nil {
		return nil, true, err
	}
	if h.subjectRevoked(s.Subject) {
		// The user was revoked (by a revocation whose enforcement,
		// CloseWhere, has not deleted this session yet, or could not): the
		// login ends with it.
		if err := h.sessions.Delete(r.Context(), s.ID); err != nil {
			h.log.Warn("web: could not delete the session of a revoked subject", "subject", s.Subject, "err", err)
		}
		h.log.Info("web: session ended, its subject is revoked", "subject", s.Subject)
		return nil, true, nil
	}
	return s, true, nil
}

// serveSessionStoreError answers a request whose session could not be
// read or written because of the store: 503 store_unavailable (a page
// load gets the error page). The session cookie is kept: the session may
// well be live once the database answers.
func (h *Handler) serveSessionStoreError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	h.log.Error("web: session store", "path", r.URL.Path, "err", err)
	if wantsJSONError(r) {
		apierr.WriteNew(w, http.StatusServiceUnavailable, "store_unavailable", "the database is unavailable, so the dashboard session cannot be checked; retry in a moment")
		return
	}
	h.renderAuthError(w, http.StatusServiceUnavailable, "Database unavailable", "The database is unavailable, so your dashboard session cannot be checked. Retry in a moment.")
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
// and a booking or token revocation ends none (without asking the store).
// The sessions are deleted from the store, which every node of a cluster
// shares: the first node to apply a revocation ends them and the others
// find none (0), and the cookies stop working on every node. Lifting the
// revocation later does not bring a session back. If the store cannot be
// reached, the sessions stay stored but unusable while the revocation is
// in force (sessionOf checks the Denier on every request, and deletes the
// session it finds revoked).
//
// The dashboard holds no connections of its own: a page's live views are
// relay connections under the user's subject, which the same revocation
// closes with code. code is therefore unused; reason is logged.
func (h *Handler) CloseWhere(m relay.IdentityMatch, code relay.CloseCode, reason string) int {
	if !m.Matches(relay.Identity{Subject: m.Value}) {
		return 0 // not a subject match: it covers no session
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionEndTimeout)
	defer cancel()
	n, err := h.sessions.DeleteSubject(ctx, m.Value)
	if err != nil {
		h.log.Warn("web: could not delete the sessions of a revoked subject (they stay unusable while it is revoked)",
			"subject", m.Value, "reason", reason, "err", err)
		return 0
	}
	if n > 0 {
		h.log.Info("web: sessions ended", "subject", m.Value, "sessions", n, "reason", reason)
	}
	return n
}
