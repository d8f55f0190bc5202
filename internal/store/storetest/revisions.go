package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

func changesAfter(t *testing.T, s store.Store, after int64, limit int) store.RevocationChanges {
	t.Helper()
	page, err := s.RevocationChanges(ctxT(t), after, limit)
	if err != nil {
		t.Fatalf("RevocationChanges(%d, %d): %v", after, limit, err)
	}
	return page
}

func revision(t *testing.T, s store.Store) int64 {
	t.Helper()
	r, err := s.RevocationRevision(ctxT(t))
	if err != nil {
		t.Fatalf("RevocationRevision: %v", err)
	}
	return r
}

// testRevisionsNumberChanges: every Revoke and Unrevoke (one that removes
// nothing too) takes the next revision and is listed under it, as stored;
// a refused change takes none; pages follow the limit; a change replaces
// the earlier one of its value.
func testRevisionsNumberChanges(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	if r := revision(t, s); r != 0 {
		t.Fatalf("a new store's revision is %d, want 0", r)
	}
	if page := changesAfter(t, s, 0, 0); len(page.Changes) != 0 || page.Revision != 0 || page.More {
		t.Fatalf("a new store's changes: %+v", page)
	}
	exp := t0.Add(time.Hour)
	steps := []func() (int64, error){
		func() (int64, error) {
			return s.Revoke(ctx, store.Revocation{Kind: store.RevokeBooking, Value: "b1", Reason: "r1", Actor: "op", CreatedAt: t0, ExpiresAt: exp}, ev("deny", "b1"))
		},
		func() (int64, error) {
			return s.Revoke(ctx, store.Revocation{Kind: store.RevokeSubject, Value: "s1", Reason: "r2", Actor: "op2", CreatedAt: t0.Add(time.Minute), ExpiresAt: exp}, ev("revoke", "s1"))
		},
		func() (int64, error) { // removes nothing: recorded all the same
			_, r, err := s.Unrevoke(ctx, store.RevokeSubject, "nobody", nil, ev("unrevoke", "subject:nobody"))
			return r, err
		},
		func() (int64, error) {
			_, r, err := s.Unrevoke(ctx, store.RevokeBooking, "b2", &store.Allowance{Actor: "admin2", CreatedAt: t0.Add(2 * time.Minute), ExpiresAt: exp}, ev("allow", "b2"))
			return r, err
		},
	}
	for i, step := range steps {
		r, err := step()
		if err != nil || r != int64(i+1) {
			t.Fatalf("change %d: revision %d, %v; want %d", i+1, r, err, i+1)
		}
	}
	if _, err := s.Revoke(ctx, store.Revocation{Kind: "label", Value: "x"}, ev("revoke", "x")); err == nil {
		t.Fatal("Revoke of an unknown kind succeeded")
	}
	if _, _, err := s.Unrevoke(ctx, store.RevokeSubject, "x", &store.Allowance{}, ev("allow", "x")); err == nil {
		t.Fatal("Unrevoke with an allowance of a subject succeeded")
	}
	if r := revision(t, s); r != 4 {
		t.Fatalf("revision after four changes and two refused: %d, want 4", r)
	}

	want := []store.RevocationChange{
		{Revision: 1, Op: store.OpRevoke, Revocation: store.Revocation{Kind: store.RevokeBooking, Value: "b1", Reason: "r1", Actor: "op", CreatedAt: t0, ExpiresAt: exp}},
		{Revision: 2, Op: store.OpRevoke, Revocation: store.Revocation{Kind: store.RevokeSubject, Value: "s1", Reason: "r2", Actor: "op2", CreatedAt: t0.Add(time.Minute), ExpiresAt: exp}},
		{Revision: 3, Op: store.OpUnrevoke, Revocation: store.Revocation{Kind: store.RevokeSubject, Value: "nobody", Actor: "admin", CreatedAt: t0}},
		{Revision: 4, Op: store.OpUnrevoke, Revocation: store.Revocation{Kind: store.RevokeBooking, Value: "b2", Actor: "admin2", CreatedAt: t0.Add(2 * time.Minute)},
			Allow: &store.Allowance{BookingID: "b2", Actor: "admin2", CreatedAt: t0.Add(2 * time.Minute), ExpiresAt: exp}},
	}
	checkChanges(t, changesAfter(t, s, 0, 0), want, 4)

	// b1 again, later: the change replaces revision 1, with the first
	// CreatedAt.
	if r, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeBooking, Value: "b1", Reason: "r5", Actor: "op5", CreatedAt: t0.Add(5 * time.Minute), ExpiresAt: exp.Add(time.Hour)}, ev("deny", "b1")); err != nil || r != 5 {
		t.Fatalf("b1 again: revision %d, %v; want 5", r, err)
	}
	want = append(want[1:], store.RevocationChange{Revision: 5, Op: store.OpRevoke,
		Revocation: store.Revocation{Kind: store.RevokeBooking, Value: "b1", Reason: "r5", Actor: "op5", CreatedAt: t0, ExpiresAt: exp.Add(time.Hour)}})
	checkChanges(t, changesAfter(t, s, 0, 0), want, 5)

	if p := changesAfter(t, s, 3, 0); len(p.Changes) != 2 || p.Changes[0].Revision != 4 || p.Revision != 5 || p.More {
		t.Fatalf("changes after 3: %+v", p)
	}
	if p := changesAfter(t, s, 5, 0); len(p.Changes) != 0 || p.Revision != 5 || p.More {
		t.Fatalf("changes after 5: %+v", p)
	}
	p := changesAfter(t, s, 0, 3)
	if len(p.Changes) != 3 || p.Revision != 4 || !p.More {
		t.Fatalf("a page of 3: %d changes, revision %d, more %v; want 3, 4, true", len(p.Changes), p.Revision, p.More)
	}
	if p := changesAfter(t, s, p.Revision, 3); len(p.Changes) != 1 || p.Changes[0].Revision != 5 || p.Revision != 5 || p.More {
		t.Fatalf("the next page: %+v", p)
	}
}

func checkChanges(t *testing.T, page store.RevocationChanges, want []store.RevocationChange, current int64) {
	t.Helper()
	if len(page.Changes) != len(want) || page.Revision != current || page.More {
		t.Fatalf("%d changes, revision %d, more %v; want %d, %d, false: %+v", len(page.Changes), page.Revision, page.More, len(want), current, page.Changes)
	}
	for i, w := range want {
		g := page.Changes[i]
		if g.Revision != w.Revision || g.Op != w.Op || !sameRevocation(g.Revocation, w.Revocation) || (g.Allow == nil) != (w.Allow == nil) ||
			g.Allow != nil && (g.Allow.BookingID != w.Allow.BookingID || g.Allow.Actor != w.Allow.Actor || !g.Allow.CreatedAt.Equal(w.Allow.CreatedAt) || !g.Allow.ExpiresAt.Equal(w.Allow.ExpiresAt)) {
			t.Errorf("change %d:\n got  %+v (allow %+v)\n want %+v (allow %+v)", i+1, g, g.Allow, w, w.Allow)
		}
	}
}

// testRevisionsSupersede: the log keeps the last change of a value (and
// the last allowance of a booking an unrevoke left in place), for as long
// as the longest-lived revocation it replaced: a revocation shortened and
// then lifted keeps its lifting until the first expiry has passed, since a
// node that applied only the first revoke still holds it.
func testRevisionsSupersede(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "k", CreatedAt: t0, ExpiresAt: t0.Add(3 * time.Hour)}) // 1
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "k", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})     // 2: shortened
	if _, _, err := s.Unrevoke(ctx, store.RevokeToken, "k", nil, ev("unrevoke", "k")); err != nil {                          // 3: lifted
		t.Fatal(err)
	}
	revisions := func() string {
		t.Helper()
		var got []int64
		for _, c := range changesAfter(t, s, 0, 0).Changes {
			got = append(got, c.Revision)
		}
		return fmt.Sprint(got)
	}
	if got := revisions(); got != "[3]" {
		t.Fatalf("after revoke, revoke, unrevoke of one value: %s, want [3]", got)
	}
	if _, err := s.PurgeExpired(ctx, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := revisions(); got != "[3]" {
		t.Fatalf("after a purge past the second expiry only: %s, want [3]", got)
	}
	if _, err := s.PurgeExpired(ctx, t0.Add(4*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := revisions(); got != "[]" {
		t.Fatalf("after a purge past both expiries: %s, want []", got)
	}

	allow := &store.Allowance{CreatedAt: t0, ExpiresAt: t0.Add(5 * time.Hour)}
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "b", allow, ev("allow", "b")); err != nil { // 4
		t.Fatal(err)
	}
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "b", nil, ev("unrevoke", "b")); err != nil { // 5: the allowance stays
		t.Fatal(err)
	}
	if got := revisions(); got != "[4 5]" {
		t.Fatalf("allow, then a plain unrevoke: %s, want [4 5]", got)
	}
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeBooking, Value: "b", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}) // 6
	if got := revisions(); got != "[6]" {
		t.Fatalf("then a revoke: %s, want [6]", got)
	}
	if _, err := s.PurgeExpired(ctx, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := revisions(); got != "[6]" {
		t.Fatalf("the revoke that replaced an allowance of 5 h, after 2 h: %s, want [6] (kept as long as the allowance)", got)
	}
}

func sameRevocation(a, b store.Revocation) bool {
	return a.Kind == b.Kind && a.Value == b.Value && a.Reason == b.Reason && a.Actor == b.Actor &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

// testRevisionsConcurrent: concurrent writers get distinct revisions, and
// a reader polling "changes after the last one I saw" while they write
// sees the revisions without a gap (a change never becomes visible after
// one with a higher revision, so a poller never skips one).
func testRevisionsConcurrent(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const writers, each = 6, 15
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[int64]string{}
		errs []error
	)
	done := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				v := fmt.Sprintf("w%d-%d", w, i)
				var (
					r   int64
					err error
				)
				if i%3 == 2 {
					_, r, err = s.Unrevoke(ctx, store.RevokeToken, v, nil, ev("unrevoke", v))
				} else {
					r, err = s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: v, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, ev("revoke", v))
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if prev, dup := seen[r]; dup {
					errs = append(errs, fmt.Errorf("revision %d given to %s and %s", r, prev, v))
				} else {
					seen[r] = v
				}
				mu.Unlock()
			}
		})
	}
	var (
		readerErr error
		readerWG  sync.WaitGroup
	)
	readerWG.Go(func() {
		var last int64
		for polls := 0; polls < 100000; polls++ {
			select {
			case <-done:
				return
			default:
			}
			page, err := s.RevocationChanges(ctx, last, 0)
			if err != nil {
				readerErr = err
				return
			}
			for _, c := range page.Changes {
				if c.Revision != last+1 {
					readerErr = fmt.Errorf("after revision %d the reader saw %d: a change became visible after a later one", last, c.Revision)
					return
				}
				last = c.Revision
			}
			if page.Revision < last {
				readerErr = fmt.Errorf("page revision %d below its last change %d", page.Revision, last)
				return
			}
		}
	})
	wg.Wait()
	close(done)
	readerWG.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d writes failed, first: %v", len(errs), errs[0])
	}
	if readerErr != nil {
		t.Fatal(readerErr)
	}
	const total = writers * each
	page := changesAfter(t, s, 0, total+10)
	if len(page.Changes) != total || page.Revision != total {
		t.Fatalf("%d changes, revision %d; want %d of each", len(page.Changes), page.Revision, total)
	}
	for i, c := range page.Changes {
		if c.Revision != int64(i+1) || seen[c.Revision] != c.Revocation.Value {
			t.Fatalf("change %d: revision %d value %q; the writer got revision %d for %q", i, c.Revision, c.Revocation.Value, c.Revision, seen[c.Revision])
		}
	}
}

// testRevisionsPurge: PurgeExpired drops the changes nobody can need (an
// expired revocation's revoke, the removal of one that has expired, an
// unrevoke that removed nothing) and keeps the others; the revision stays.
func testRevisionsPurge(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "1h", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})     // 1
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "3h", CreatedAt: t0, ExpiresAt: t0.Add(3 * time.Hour)}) // 2
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "never", CreatedAt: t0})                                // 3
	if _, _, err := s.Unrevoke(ctx, store.RevokeToken, "1h", nil, ev("unrevoke", "1h")); err != nil {                         // 4: kept until 1h
		t.Fatal(err)
	}
	if _, _, err := s.Unrevoke(ctx, store.RevokeToken, "absent", nil, ev("unrevoke", "absent")); err != nil { // 5: nothing to keep
		t.Fatal(err)
	}
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeBooking, Value: "b", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})                                       // 6
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "b", &store.Allowance{CreatedAt: t0, ExpiresAt: t0.Add(4 * time.Hour)}, ev("allow", "b")); err != nil { // 7: kept until 4h
		t.Fatal(err)
	}
	if _, err := s.PurgeExpired(ctx, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	page := changesAfter(t, s, 0, 0)
	var got []int64
	for _, c := range page.Changes {
		got = append(got, c.Revision)
	}
	if fmt.Sprint(got) != "[2 3 7]" || page.Revision != 7 {
		t.Fatalf("after the purge at t0+2h: revisions %v, current %d; want [2 3 7] and 7", got, page.Revision)
	}
	if r := revision(t, s); r != 7 {
		t.Fatalf("revision after the purge: %d, want 7", r)
	}
	if r, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: "next", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, ev("revoke", "next")); err != nil || r != 8 {
		t.Fatalf("the next change: revision %d, %v; want 8", r, err)
	}
}
