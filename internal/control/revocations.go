package control

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Revocations is the in-memory view of the active revocations and
// allowances. Access requests and code exchanges consult it on every call,
// so it never waits for the database; it changes only after a store has
// durably recorded a change: Load at start, and the Enforcer for each change
// recorded since, by this node or (an event on the bus) by another node of
// the cluster, which shares the store.
type Revocations struct {
	now func() time.Time

	mu      sync.RWMutex
	revoked map[store.RevocationKind]map[string]store.Revocation // guarded by mu
	allowed map[string]store.Allowance                           // guarded by mu; by booking id
}

// NewRevocations returns an empty set. now may be nil (time.Now).
func NewRevocations(now func() time.Time) *Revocations {
	if now == nil {
		now = time.Now
	}
	return &Revocations{
		now: now,
		revoked: map[store.RevocationKind]map[string]store.Revocation{
			store.RevokeBooking: {}, store.RevokeSubject: {}, store.RevokeToken: {},
		},
		allowed: map[string]store.Allowance{},
	}
}

// Load replaces the contents with what the store holds.
func (r *Revocations) Load(revs []store.Revocation, allows []store.Allowance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.revoked {
		clear(r.revoked[k])
	}
	clear(r.allowed)
	for _, rv := range revs {
		if m := r.revoked[rv.Kind]; m != nil {
			m[rv.Value] = rv
		}
	}
	for _, a := range allows {
		r.allowed[a.BookingID] = a
	}
}

// Add records a revocation (and forgets an allowance of the same booking).
func (r *Revocations) Add(rv store.Revocation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.revoked[rv.Kind]; m != nil {
		m[rv.Value] = rv
	}
	if rv.Kind == store.RevokeBooking {
		delete(r.allowed, rv.Value)
	}
}

// Remove forgets a revocation and, for a booking, records the allowance.
func (r *Revocations) Remove(kind store.RevocationKind, value string, allow *store.Allowance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.revoked[kind], value)
	if allow != nil {
		r.allowed[allow.BookingID] = *allow
	}
}

// Denied implements access.Denier: whether a token with these claims is
// revoked, and by which kind of revocation.
func (r *Revocations) Denied(bookingID, subject, tokenID string) (string, bool) {
	// The clock is read only for a match: every connect asks, and few are
	// revoked.
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, c := range [...]struct {
		kind  store.RevocationKind
		value string
	}{{store.RevokeBooking, bookingID}, {store.RevokeSubject, subject}, {store.RevokeToken, tokenID}} {
		if c.value == "" {
			continue
		}
		if rv, ok := r.revoked[c.kind][c.value]; ok && r.now().Before(rv.ExpiresAt) {
			return string(c.kind), true
		}
	}
	return "", false
}

// List returns the active revocations of kind ("" for all), oldest first.
func (r *Revocations) List(kind store.RevocationKind) []store.Revocation {
	now := r.now()
	r.mu.RLock()
	var out []store.Revocation
	for k, m := range r.revoked {
		if kind != "" && k != kind {
			continue
		}
		for _, rv := range m {
			if now.Before(rv.ExpiresAt) {
				out = append(out, rv)
			}
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b store.Revocation) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(string(a.Kind)+a.Value, string(b.Kind)+b.Value)
	})
	return out
}

// Allowances returns the unexpired allowances, sorted by booking id.
func (r *Revocations) Allowances() []store.Allowance {
	now := r.now()
	r.mu.RLock()
	var out []store.Allowance
	for _, a := range r.allowed {
		if now.Before(a.ExpiresAt) {
			out = append(out, a)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b store.Allowance) int { return strings.Compare(a.BookingID, b.BookingID) })
	return out
}

// Purge forgets revocations and allowances that expired at now.
func (r *Revocations) Purge(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.revoked {
		for v, rv := range m {
			if !now.Before(rv.ExpiresAt) {
				delete(m, v)
			}
		}
	}
	for b, a := range r.allowed {
		if !now.Before(a.ExpiresAt) {
			delete(r.allowed, b)
		}
	}
}

// LoadRevocations fills r from st (Load) and returns the revision it was
// loaded at, for EnforcerConfig.Revision. The revision is read first: what
// the lists hold is at least that revision, and catching up from it
// applies, in order, any change the lists already reflect, which ends in the
// same state.
func LoadRevocations(ctx context.Context, st store.Store, r *Revocations, now time.Time) (revision int64, err error) {
	if revision, err = st.RevocationRevision(ctx); err != nil {
		return 0, fmt.Errorf("load the revocation revision: %w", err)
	}
	revs, err := st.Revocations(ctx, "", now)
	if err != nil {
		return 0, fmt.Errorf("load revocations: %w", err)
	}
	allows, err := st.Allowances(ctx, now)
	if err != nil {
		return 0, fmt.Errorf("load allowances: %w", err)
	}
	r.Load(revs, allows)
	return revision, nil
}
