// Package storetest is the conformance suite every store.Store backend must
// pass. A backend's test calls Run with a function that opens a fresh,
// empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Run runs the conformance suite as parallel subtests of t. open must
// return a new, empty store for each call; the suite closes it when the
// subtest ends (Close is called once more if the subtest closed it itself).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"RevokeIsIdempotent", testRevokeIdempotent},
		{"RevokeValidates", testRevokeValidates},
		{"UnrevokeReportsRemoval", testUnrevokeReportsRemoval},
		{"UnrevokeBookingRecordsAllowance", testUnrevokeRecordsAllowance},
		{"UnrevokeAllowanceNeedsBooking", testUnrevokeAllowanceNeedsBooking},
		{"RevokeBookingRemovesAllowance", testRevokeRemovesAllowance},
		{"ExpiryFiltering", testExpiryFiltering},
		{"PurgeExpired", testPurgeExpired},
		{"KindFiltering", testKindFiltering},
		{"RevocationsOldestFirst", testOrdering},
		{"ZeroTimesMeanNow", testZeroTimes},
		{"UTCRoundTrip", testUTCRoundTrip},
		{"AuditAppendAndPage", testAuditPaging},
		{"AuditSince", testAuditSince},
		{"AuditLimit", testAuditLimit},
		{"AuditPage", testAuditPage},
		{"ConcurrentWriters", testConcurrentWriters},
		{"CanceledContextChangesNothing", testCanceledContext},
		{"UseAfterClose", testUseAfterClose},
		{"RevisionsNumberChanges", testRevisionsNumberChanges},
		{"RevisionsConcurrent", testRevisionsConcurrent},
		{"RevisionsPurge", testRevisionsPurge},
		{"RevisionsSupersede", testRevisionsSupersede},

		{"JobRoundTrip", testJobRoundTrip},
		{"CreateJobErrors", testCreateJobErrors},
		{"JobNotFound", testJobNotFound},
		{"UpdateJob", testUpdateJob},
		{"UpdateJobConcurrent", testUpdateJobConcurrent},
		{"UpdateJobPanic", testUpdateJobPanic},
		{"JobsFilter", testJobsFilter},
		{"JobsFilterTests", testJobsFilterTests},
		{"Definitions", testDefinitions},
		{"Schedules", testSchedules},
		{"ActiveJobs", testActiveJobs},
		{"Runs", testRuns},
		{"AgentRuns", testAgentRuns},
		{"DeleteJobDeletesRuns", testDeleteJobDeletesRuns},
		{"ClearResults", testClearResults},
		{"Agents", testAgents},
		{"DisconnectAgents", testDisconnectAgents},
		{"DeleteAgent", testDeleteAgent},

		{"LeaseHolders", testLeaseHolders},
		{"LeaseNames", testLeaseNames},
		{"LeaseExpiry", testLeaseExpiry},
		{"LeaseConcurrent", testLeaseConcurrent},
		{"LeaseValidates", testLeaseValidates},

		{"SessionRoundTrip", testSessionRoundTrip},
		{"SessionExpiry", testSessionExpiry},
		{"SessionDelete", testSessionDelete},
		{"SessionConcurrent", testSessionConcurrent},
		{"SessionValidates", testSessionValidates},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
}

// t0 is a fixed instant, so expiry tests do not depend on the clock.
var t0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func ev(action, target string) store.AuditEvent {
	return store.AuditEvent{Time: t0, Actor: "admin", Action: action, Target: target, Reason: "test", Detail: `{"k":1}`}
}

func mustRevoke(t *testing.T, s store.Store, r store.Revocation) {
	t.Helper()
	if _, err := s.Revoke(ctxT(t), r, ev("revoke", string(r.Kind)+":"+r.Value)); err != nil {
		t.Fatalf("Revoke(%s %s): %v", r.Kind, r.Value, err)
	}
}

func revocations(t *testing.T, s store.Store, kind store.RevocationKind, now time.Time) []store.Revocation {
	t.Helper()
	rs, err := s.Revocations(ctxT(t), kind, now)
	if err != nil {
		t.Fatalf("Revocations(%q): %v", kind, err)
	}
	return rs
}

func allowances(t *testing.T, s store.Store, now time.Time) []store.Allowance {
	t.Helper()
	as, err := s.Allowances(ctxT(t), now)
	if err != nil {
		t.Fatalf("Allowances: %v", err)
	}
	return as
}

func audit(t *testing.T, s store.Store, afterID int64, since time.Time, limit int) []store.AuditEvent {
	t.Helper()
	evs, err := s.Audit(ctxT(t), afterID, since, limit)
	if err != nil {
		t.Fatalf("Audit(%d, %v, %d): %v", afterID, since, limit, err)
	}
	return evs
}

func allAudit(t *testing.T, s store.Store) []store.AuditEvent {
	t.Helper()
	var all []store.AuditEvent
	var after int64
	for {
		page := audit(t, s, after, time.Time{}, store.MaxAuditLimit)
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].ID
	}
}

func values(rs []store.Revocation) []string {
	var out []string
	for _, r := range rs {
		out = append(out, string(r.Kind)+":"+r.Value)
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testRevokeIdempotent(t *testing.T, s store.Store) {
	first := store.Revocation{Kind: store.RevokeBooking, Value: "b1", Reason: "first", Actor: "alice",
		CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	mustRevoke(t, s, first)
	again := first
	again.Reason, again.Actor = "second", "bob"
	again.CreatedAt = t0.Add(time.Minute)
	again.ExpiresAt = t0.Add(2 * time.Hour)
	mustRevoke(t, s, again)

	rs := revocations(t, s, "", t0)
	if len(rs) != 1 {
		t.Fatalf("after revoking twice: %d revocations %v, want 1", len(rs), values(rs))
	}
	got := rs[0]
	want := store.Revocation{Kind: store.RevokeBooking, Value: "b1", Reason: "second", Actor: "bob",
		CreatedAt: t0, ExpiresAt: t0.Add(2 * time.Hour)}
	if !revEqual(got, want) {
		t.Errorf("revoked twice: got %+v, want %+v (reason, actor, expiry updated; first CreatedAt kept)", got, want)
	}
	if n := len(allAudit(t, s)); n != 2 {
		t.Errorf("audit has %d events after two revokes, want 2", n)
	}
}

func revEqual(a, b store.Revocation) bool {
	return a.Kind == b.Kind && a.Value == b.Value && a.Reason == b.Reason && a.Actor == b.Actor &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func testRevokeValidates(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for _, r := range []store.Revocation{
		{Kind: "session", Value: "x"},
		{Kind: "", Value: "x"},
		{Kind: store.RevokeToken, Value: ""},
	} {
		if _, err := s.Revoke(ctx, r, ev("revoke", "x")); err == nil {
			t.Errorf("Revoke(%q, %q) succeeded, want an error", r.Kind, r.Value)
		} else if errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Revoke(%q, %q): invalid input reported as unavailable: %v", r.Kind, r.Value, err)
		}
	}
	if _, _, err := s.Unrevoke(ctx, "session", "x", nil, ev("unrevoke", "x")); err == nil {
		t.Error("Unrevoke of an unknown kind succeeded")
	}
	if _, err := s.Revocations(ctx, "session", t0); err == nil {
		t.Error("Revocations of an unknown kind succeeded")
	}
	if rs := revocations(t, s, "", t0); len(rs) != 0 {
		t.Errorf("invalid revokes stored %v", values(rs))
	}
	if evs := allAudit(t, s); len(evs) != 0 {
		t.Errorf("invalid calls appended %d audit events", len(evs))
	}
}

func testUnrevokeReportsRemoval(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	removed, _, err := s.Unrevoke(ctx, store.RevokeSubject, "carol", nil, ev("unrevoke", "subject:carol"))
	if err != nil || removed {
		t.Fatalf("Unrevoke of nothing = %v, %v; want false, nil", removed, err)
	}
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeSubject, Value: "carol", CreatedAt: t0})
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "carol", CreatedAt: t0})
	removed, _, err = s.Unrevoke(ctx, store.RevokeSubject, "carol", nil, ev("unrevoke", "subject:carol"))
	if err != nil || !removed {
		t.Fatalf("Unrevoke of a revocation = %v, %v; want true, nil", removed, err)
	}
	removed, _, err = s.Unrevoke(ctx, store.RevokeSubject, "carol", nil, ev("unrevoke", "subject:carol"))
	if err != nil || removed {
		t.Fatalf("second Unrevoke = %v, %v; want false, nil", removed, err)
	}
	if got := values(revocations(t, s, "", t0)); !equalStrings(got, []string{"token:carol"}) {
		t.Errorf("after unrevoking subject:carol: %v, want [token:carol]", got)
	}
	// Every call is audited, whether or not it removed something.
	evs := allAudit(t, s)
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action)
	}
	if !equalStrings(actions, []string{"unrevoke", "revoke", "revoke", "unrevoke", "unrevoke"}) {
		t.Errorf("audit actions %v", actions)
	}
}

func testUnrevokeRecordsAllowance(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeBooking, Value: "b7", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	allow := &store.Allowance{Actor: "alice", CreatedAt: t0.Add(time.Minute), ExpiresAt: t0.Add(3 * time.Hour)}
	removed, _, err := s.Unrevoke(ctx, store.RevokeBooking, "b7", allow, ev("allow", "booking:b7"))
	if err != nil || !removed {
		t.Fatalf("Unrevoke = %v, %v; want true, nil", removed, err)
	}
	if rs := revocations(t, s, "", t0); len(rs) != 0 {
		t.Errorf("revocations after unrevoke: %v", values(rs))
	}
	as := allowances(t, s, t0)
	want := store.Allowance{BookingID: "b7", Actor: "alice", CreatedAt: t0.Add(time.Minute), ExpiresAt: t0.Add(3 * time.Hour)}
	if len(as) != 1 || !allowEqual(as[0], want) {
		t.Fatalf("allowances = %+v, want [%+v]", as, want)
	}
	// Allowing a booking that was not revoked records the allowance too,
	// and allowing again updates it.
	if removed, _, err := s.Unrevoke(ctx, store.RevokeBooking, "b8", &store.Allowance{BookingID: "b8", CreatedAt: t0}, ev("allow", "booking:b8")); err != nil || removed {
		t.Fatalf("Unrevoke(b8) = %v, %v; want false, nil", removed, err)
	}
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "b7", &store.Allowance{Actor: "bob", CreatedAt: t0.Add(2 * time.Minute)}, ev("allow", "booking:b7")); err != nil {
		t.Fatal(err)
	}
	as = allowances(t, s, t0)
	if len(as) != 2 || as[0].BookingID != "b8" || as[1].BookingID != "b7" || as[1].Actor != "bob" || !as[1].ExpiresAt.IsZero() {
		t.Errorf("allowances = %+v, want b8 then b7 by bob, never expiring", as)
	}
}

func allowEqual(a, b store.Allowance) bool {
	return a.BookingID == b.BookingID && a.Actor == b.Actor && a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func testUnrevokeAllowanceNeedsBooking(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeSubject, Value: "dave", CreatedAt: t0})
	if _, _, err := s.Unrevoke(ctx, store.RevokeSubject, "dave", &store.Allowance{}, ev("allow", "subject:dave")); err == nil {
		t.Error("Unrevoke of a subject with an allowance succeeded")
	}
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "b1", &store.Allowance{BookingID: "b2"}, ev("allow", "booking:b1")); err == nil {
		t.Error("Unrevoke with an allowance for another booking succeeded")
	}
	if got := values(revocations(t, s, "", t0)); !equalStrings(got, []string{"subject:dave"}) {
		t.Errorf("refused Unrevoke changed revocations: %v", got)
	}
	if as := allowances(t, s, t0); len(as) != 0 {
		t.Errorf("refused Unrevoke recorded allowances %+v", as)
	}
	if n := len(allAudit(t, s)); n != 1 {
		t.Errorf("audit has %d events, want 1 (the revoke)", n)
	}
}

func testRevokeRemovesAllowance(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for _, b := range []string{"b1", "b2"} {
		if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, b, &store.Allowance{CreatedAt: t0}, ev("allow", "booking:"+b)); err != nil {
			t.Fatal(err)
		}
	}
	// A subject or token with the same value leaves the allowance alone.
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeSubject, Value: "b1", CreatedAt: t0})
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "b1", CreatedAt: t0})
	if as := allowances(t, s, t0); len(as) != 2 {
		t.Fatalf("allowances = %+v, want b1 and b2", as)
	}
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeBooking, Value: "b1", CreatedAt: t0})
	as := allowances(t, s, t0)
	if len(as) != 1 || as[0].BookingID != "b2" {
		t.Errorf("after revoking booking b1: allowances %+v, want only b2", as)
	}
}

func testExpiryFiltering(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "1h", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "2h", CreatedAt: t0.Add(time.Second), ExpiresAt: t0.Add(2 * time.Hour)})
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "never", CreatedAt: t0.Add(2 * time.Second)})
	for _, a := range []struct {
		id  string
		exp time.Time
	}{{"a1h", t0.Add(time.Hour)}, {"anever", time.Time{}}} {
		if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, a.id, &store.Allowance{CreatedAt: t0, ExpiresAt: a.exp}, ev("allow", a.id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		now    time.Time
		revs   []string
		allows int
	}{
		{t0.Add(-time.Hour), []string{"token:1h", "token:2h", "token:never"}, 2},
		{t0.Add(time.Hour - time.Microsecond), []string{"token:1h", "token:2h", "token:never"}, 2},
		{t0.Add(time.Hour), []string{"token:2h", "token:never"}, 1}, // expired at exactly ExpiresAt
		{t0.Add(3 * time.Hour), []string{"token:never"}, 1},
		{t0.AddDate(100, 0, 0), []string{"token:never"}, 1},
	} {
		if got := values(revocations(t, s, "", c.now)); !equalStrings(got, c.revs) {
			t.Errorf("Revocations at t0%+v = %v, want %v", c.now.Sub(t0), got, c.revs)
		}
		if got := allowances(t, s, c.now); len(got) != c.allows {
			t.Errorf("Allowances at t0%+v = %+v, want %d", c.now.Sub(t0), got, c.allows)
		}
	}
}

func testPurgeExpired(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "1h", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeSubject, Value: "2h", CreatedAt: t0, ExpiresAt: t0.Add(2 * time.Hour)})
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "never", CreatedAt: t0})
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "a1h", &store.Allowance{CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, ev("allow", "a1h")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "a3h", &store.Allowance{CreatedAt: t0, ExpiresAt: t0.Add(3 * time.Hour)}, ev("allow", "a3h")); err != nil {
		t.Fatal(err)
	}
	auditBefore := len(allAudit(t, s))

	n, err := s.PurgeExpired(ctx, t0.Add(-time.Hour))
	if err != nil || n != 0 {
		t.Fatalf("PurgeExpired before anything expired = %d, %v; want 0, nil", n, err)
	}
	n, err = s.PurgeExpired(ctx, t0.Add(time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PurgeExpired at t0+1h = %d, %v; want 2 (token:1h and allowance a1h), nil", n, err)
	}
	// Listing at an earlier time shows they are gone, not just filtered.
	if got := values(revocations(t, s, "", t0)); !equalStrings(got, []string{"subject:2h", "token:never"}) {
		t.Errorf("after purge: %v", got)
	}
	if as := allowances(t, s, t0); len(as) != 1 || as[0].BookingID != "a3h" {
		t.Errorf("after purge: allowances %+v, want a3h", as)
	}
	n, err = s.PurgeExpired(ctx, t0.AddDate(10, 0, 0))
	if err != nil || n != 2 {
		t.Fatalf("PurgeExpired much later = %d, %v; want 2, nil", n, err)
	}
	if got := values(revocations(t, s, "", t0)); !equalStrings(got, []string{"token:never"}) {
		t.Errorf("after second purge: %v, want the revocation that never expires", got)
	}
	if got := len(allAudit(t, s)); got != auditBefore {
		t.Errorf("purging changed the audit log: %d events, had %d", got, auditBefore)
	}
}

func testKindFiltering(t *testing.T, s store.Store) {
	for i, r := range []store.Revocation{
		{Kind: store.RevokeBooking, Value: "x"},
		{Kind: store.RevokeSubject, Value: "x"},
		{Kind: store.RevokeToken, Value: "x"},
		{Kind: store.RevokeToken, Value: "y"},
	} {
		r.CreatedAt = t0.Add(time.Duration(i) * time.Second)
		mustRevoke(t, s, r)
	}
	for kind, want := range map[store.RevocationKind][]string{
		"":                  {"booking:x", "subject:x", "token:x", "token:y"},
		store.RevokeBooking: {"booking:x"},
		store.RevokeSubject: {"subject:x"},
		store.RevokeToken:   {"token:x", "token:y"},
	} {
		if got := values(revocations(t, s, kind, t0)); !equalStrings(got, want) {
			t.Errorf("Revocations(%q) = %v, want %v", kind, got, want)
		}
	}
}

func testOrdering(t *testing.T, s store.Store) {
	// Inserted newest first; listed oldest first.
	for i := 5; i >= 1; i-- {
		mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: fmt.Sprintf("t%d", i), CreatedAt: t0.Add(time.Duration(i) * time.Minute)})
	}
	want := []string{"token:t1", "token:t2", "token:t3", "token:t4", "token:t5"}
	if got := values(revocations(t, s, store.RevokeToken, t0)); !equalStrings(got, want) {
		t.Errorf("Revocations = %v, want %v", got, want)
	}
	ctx := ctxT(t)
	for i := 3; i >= 1; i-- {
		b := fmt.Sprintf("b%d", i)
		if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, b, &store.Allowance{CreatedAt: t0.Add(time.Duration(i) * time.Minute)}, ev("allow", b)); err != nil {
			t.Fatal(err)
		}
	}
	as := allowances(t, s, t0)
	if len(as) != 3 || as[0].BookingID != "b1" || as[1].BookingID != "b2" || as[2].BookingID != "b3" {
		t.Errorf("Allowances = %+v, want b1, b2, b3", as)
	}
}

func testZeroTimes(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	before := time.Now().Add(-time.Second)
	if _, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: "z"}, store.AuditEvent{Action: "revoke"}); err != nil {
		t.Fatal(err)
	}
	evs, err := s.AppendAudit(ctx, store.AuditEvent{Action: "token.mint"})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Second)
	rs := revocations(t, s, "", time.Now())
	if len(rs) != 1 || rs[0].CreatedAt.Before(before) || rs[0].CreatedAt.After(after) || !rs[0].ExpiresAt.IsZero() {
		t.Errorf("revocation with zero times = %+v, want CreatedAt now and ExpiresAt zero", rs)
	}
	if evs[0].Time.Before(before) || evs[0].Time.After(after) {
		t.Errorf("AppendAudit with zero Time returned Time %v, want now", evs[0].Time)
	}
	for _, e := range allAudit(t, s) {
		if e.Time.Before(before) || e.Time.After(after) {
			t.Errorf("stored audit event %q has Time %v, want now", e.Action, e.Time)
		}
	}
}

func testUTCRoundTrip(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	created := time.Date(2031, 2, 3, 4, 5, 6, 123456789, zone)
	expires := time.Date(2099, 12, 31, 23, 59, 59, 999999999, zone)
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeSubject, Value: "tz", CreatedAt: created, ExpiresAt: expires})
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "tz", &store.Allowance{CreatedAt: created, ExpiresAt: expires}, ev("allow", "tz")); err != nil {
		t.Fatal(err)
	}
	ret, err := s.AppendAudit(ctx, store.AuditEvent{Time: created, Action: "tz"})
	if err != nil {
		t.Fatal(err)
	}

	check := func(what string, got, want time.Time) {
		t.Helper()
		want = want.UTC().Truncate(time.Microsecond)
		if got.Location() != time.UTC {
			t.Errorf("%s: location %v, want UTC", what, got.Location())
		}
		if !got.Equal(want) || got != want {
			t.Errorf("%s = %v, want %v (UTC, microseconds kept)", what, got, want)
		}
	}
	rs := revocations(t, s, store.RevokeSubject, created)
	if len(rs) != 1 {
		t.Fatalf("revocations = %v", values(rs))
	}
	check("Revocation.CreatedAt", rs[0].CreatedAt, created)
	check("Revocation.ExpiresAt", rs[0].ExpiresAt, expires)
	as := allowances(t, s, created)
	if len(as) != 1 {
		t.Fatalf("allowances = %+v", as)
	}
	check("Allowance.CreatedAt", as[0].CreatedAt, created)
	check("Allowance.ExpiresAt", as[0].ExpiresAt, expires)
	check("AppendAudit result Time", ret[0].Time, created)
	evs := audit(t, s, ret[0].ID-1, time.Time{}, 1)
	if len(evs) != 1 || evs[0].Action != "tz" {
		t.Fatalf("Audit = %+v", evs)
	}
	check("AuditEvent.Time", evs[0].Time, created)
}

func testAuditPaging(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	var appended []store.AuditEvent
	for batch := range 5 {
		var in []store.AuditEvent
		for i := range 50 {
			n := batch*50 + i
			in = append(in, store.AuditEvent{Time: t0.Add(time.Duration(n) * time.Second), Actor: "a", Action: "token.mint",
				Target: fmt.Sprintf("token:%d", n), Reason: "r", Detail: fmt.Sprintf(`{"n":%d}`, n)})
		}
		out, err := s.AppendAudit(ctx, in...)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(in) {
			t.Fatalf("AppendAudit returned %d events for %d", len(out), len(in))
		}
		for i := range out {
			want := in[i]
			want.ID = out[i].ID
			if !auditEqual(out[i], want) {
				t.Fatalf("AppendAudit returned %+v for %+v", out[i], in[i])
			}
		}
		appended = append(appended, out...)
	}
	for i := 1; i < len(appended); i++ {
		if appended[i].ID <= appended[i-1].ID {
			t.Fatalf("ids not strictly increasing: %d then %d", appended[i-1].ID, appended[i].ID)
		}
	}
	if out, err := s.AppendAudit(ctx); err != nil || len(out) != 0 {
		t.Errorf("AppendAudit() = %v, %v; want nothing, nil", out, err)
	}

	// Page through with afterID in pages of 40.
	var got []store.AuditEvent
	var after int64
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("paging does not end")
		}
		page := audit(t, s, after, time.Time{}, 40)
		if len(page) > 40 {
			t.Fatalf("page of %d events, limit 40", len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].ID
	}
	if len(got) != len(appended) {
		t.Fatalf("paged %d events, appended %d", len(got), len(appended))
	}
	for i := range got {
		if !auditEqual(got[i], appended[i]) {
			t.Fatalf("event %d: paged %+v, appended %+v", i, got[i], appended[i])
		}
	}
	if page := audit(t, s, appended[len(appended)-1].ID, time.Time{}, 10); len(page) != 0 {
		t.Errorf("Audit after the last id returned %d events", len(page))
	}
	if page := audit(t, s, appended[9].ID, time.Time{}, 3); len(page) != 3 || page[0].ID != appended[10].ID {
		t.Errorf("Audit(after the 10th, limit 3) = %+v", page)
	}
}

func auditEqual(a, b store.AuditEvent) bool {
	return a.ID == b.ID && a.Time.Equal(b.Time) && a.Actor == b.Actor && a.Action == b.Action &&
		a.Target == b.Target && a.Reason == b.Reason && a.Detail == b.Detail
}

func testAuditSince(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	var in []store.AuditEvent
	for i := range 10 {
		in = append(in, store.AuditEvent{Time: t0.Add(time.Duration(i) * time.Minute), Action: fmt.Sprint(i)})
	}
	out, err := s.AppendAudit(ctx, in...)
	if err != nil {
		t.Fatal(err)
	}
	got := audit(t, s, 0, t0.Add(7*time.Minute), 0)
	if len(got) != 3 || got[0].Action != "7" || got[2].Action != "9" {
		t.Errorf("Audit since t0+7m = %+v, want events 7, 8, 9", got)
	}
	got = audit(t, s, 0, t0.Add(7*time.Minute-time.Microsecond), 0)
	if len(got) != 3 {
		t.Errorf("Audit since just before t0+7m: %d events, want 3", len(got))
	}
	got = audit(t, s, out[8].ID, t0.Add(2*time.Minute), 0)
	if len(got) != 1 || got[0].Action != "9" {
		t.Errorf("Audit after event 8 since t0+2m = %+v, want event 9", got)
	}
	if got := audit(t, s, 0, t0.Add(time.Hour), 0); len(got) != 0 {
		t.Errorf("Audit since the future = %+v", got)
	}
}

func testAuditLimit(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	n := store.MaxAuditLimit + 50
	in := make([]store.AuditEvent, n)
	for i := range in {
		in[i] = store.AuditEvent{Time: t0, Action: "bulk", Target: fmt.Sprint(i)}
	}
	if _, err := s.AppendAudit(ctx, in...); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ limit, want int }{
		{0, store.DefaultAuditLimit},
		{-5, store.DefaultAuditLimit},
		{1, 1},
		{store.MaxAuditLimit, store.MaxAuditLimit},
		{store.MaxAuditLimit + 1, store.MaxAuditLimit},
		{1 << 40, store.MaxAuditLimit},
	} {
		if got := len(audit(t, s, 0, time.Time{}, c.limit)); got != c.want {
			t.Errorf("Audit(limit %d) returned %d events, want %d", c.limit, got, c.want)
		}
	}
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	const writers, each = 8, 100
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				v := fmt.Sprintf("w%d-%d", w, i)
				r := store.Revocation{Kind: store.RevokeToken, Value: v, CreatedAt: t0}
				if _, err := s.Revoke(ctx, r, store.AuditEvent{Time: t0, Action: "revoke", Target: "token:" + v}); err != nil {
					errs <- fmt.Errorf("writer %d: Revoke %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if rs := revocations(t, s, "", t0); len(rs) != writers*each {
		t.Errorf("%d revocations stored, want %d", len(rs), writers*each)
	}
	evs := allAudit(t, s)
	if len(evs) != writers*each {
		t.Fatalf("%d audit events, want %d", len(evs), writers*each)
	}
	targets := make(map[string]bool)
	for i, e := range evs {
		if i > 0 && e.ID <= evs[i-1].ID {
			t.Fatalf("audit ids not strictly increasing: %d then %d", evs[i-1].ID, e.ID)
		}
		targets[e.Target] = true
	}
	if len(targets) != writers*each {
		t.Errorf("%d distinct audit targets, want %d", len(targets), writers*each)
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeBooking, Value: "keep", CreatedAt: t0})
	jobFixture(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for name, call := range jobCalls(s, ctx) {
		if err := call(); err == nil {
			t.Errorf("%s with a canceled context succeeded", name)
		}
	}
	checkJobFixture(t, s)
	if _, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: "new", CreatedAt: t0}, ev("revoke", "new")); err == nil {
		t.Error("Revoke with a canceled context succeeded")
	}
	if _, _, err := s.Unrevoke(ctx, store.RevokeBooking, "keep", &store.Allowance{}, ev("allow", "keep")); err == nil {
		t.Error("Unrevoke with a canceled context succeeded")
	}
	if _, err := s.AppendAudit(ctx, ev("x", "y"), ev("x", "z")); err == nil {
		t.Error("AppendAudit with a canceled context succeeded")
	}
	if _, err := s.PurgeExpired(ctx, t0.AddDate(100, 0, 0)); err == nil {
		t.Error("PurgeExpired with a canceled context succeeded")
	}
	if _, err := s.Revocations(ctx, "", t0); err == nil {
		t.Error("Revocations with a canceled context succeeded")
	}
	if _, err := s.Audit(ctx, 0, time.Time{}, 0); err == nil {
		t.Error("Audit with a canceled context succeeded")
	}
	if got := values(revocations(t, s, "", t0)); !equalStrings(got, []string{"booking:keep"}) {
		t.Errorf("after canceled calls: revocations %v, want [booking:keep]", got)
	}
	if as := allowances(t, s, t0); len(as) != 0 {
		t.Errorf("after canceled calls: allowances %+v", as)
	}
	if evs := allAudit(t, s); len(evs) != 1 {
		t.Errorf("after canceled calls: %d audit events, want 1", len(evs))
	}
}

func testUseAfterClose(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustRevoke(t, s, store.Revocation{Kind: store.RevokeToken, Value: "x", CreatedAt: t0})
	jobFixture(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	calls := map[string]func() error{
		"Revoke": func() error {
			_, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: "y"}, ev("revoke", "y"))
			return err
		},
		"Unrevoke": func() error {
			_, _, err := s.Unrevoke(ctx, store.RevokeToken, "x", nil, ev("unrevoke", "x"))
			return err
		},
		"Revocations": func() error { _, err := s.Revocations(ctx, "", t0); return err },
		"Allowances":  func() error { _, err := s.Allowances(ctx, t0); return err },
		"PurgeExpired": func() error {
			_, err := s.PurgeExpired(ctx, t0)
			return err
		},
		"AppendAudit": func() error { _, err := s.AppendAudit(ctx, ev("a", "b")); return err },
		"Audit":       func() error { _, err := s.Audit(ctx, 0, time.Time{}, 0); return err },
		"Ping":        func() error { return s.Ping(ctx) },
	}
	maps.Copy(calls, jobCalls(s, ctx))
	maps.Copy(calls, sessionCalls(s, ctx))
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s after Close succeeded", name)
		} else if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s after Close: %v, want an error wrapping store.ErrUnavailable", name, err)
		}
	}
	s.Close() // a second Close must not panic
}
