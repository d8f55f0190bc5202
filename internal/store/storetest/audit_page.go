package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// testAuditPage checks AuditPage: newest first, paging both ways (older
// below BeforeID, newer above AfterID, each page nearest its bound), and
// the actor, action and time filters, alone and together.
func testAuditPage(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	actors := []string{"alice", "bob", "carol"}
	actions := []string{"job.create", "job.abort"}
	var in []store.AuditEvent
	for n := range 30 {
		in = append(in, store.AuditEvent{Time: t0.Add(time.Duration(n) * time.Minute), Actor: actors[n%3], Action: actions[n%2],
			Target: fmt.Sprintf("job:%d", n)})
	}
	evs, err := s.AppendAudit(ctx, in...)
	if err != nil {
		t.Fatal(err)
	}
	ids := func(evs []store.AuditEvent) []int64 {
		out := make([]int64, len(evs))
		for i, ev := range evs {
			out[i] = ev.ID
		}
		return out
	}
	// want lists the ids of the appended events at these positions.
	want := func(positions ...int) []int64 {
		out := make([]int64, len(positions))
		for i, p := range positions {
			out[i] = evs[p].ID
		}
		return out
	}
	page := func(name string, f store.AuditFilter, positions ...int) []store.AuditEvent {
		t.Helper()
		got, err := s.AuditPage(ctx, f)
		if err != nil {
			t.Fatalf("AuditPage(%s): %v", name, err)
		}
		if w := want(positions...); !slices.Equal(ids(got), w) {
			t.Errorf("AuditPage(%s) = %v, want %v", name, ids(got), w)
		}
		return got
	}
	first := page("newest 4", store.AuditFilter{Limit: 4}, 29, 28, 27, 26)
	if !auditEqual(first[0], evs[29]) {
		t.Errorf("AuditPage returned %+v for %+v", first[0], evs[29])
	}
	page("older than 26", store.AuditFilter{BeforeID: evs[26].ID, Limit: 4}, 25, 24, 23, 22)
	page("newer than 22", store.AuditFilter{AfterID: evs[22].ID, Limit: 4}, 26, 25, 24, 23)
	page("newer than 27: fewer than a page", store.AuditFilter{AfterID: evs[27].ID, Limit: 4}, 29, 28)
	page("older than the oldest", store.AuditFilter{BeforeID: evs[0].ID, Limit: 4})
	page("between", store.AuditFilter{AfterID: evs[10].ID, BeforeID: evs[13].ID}, 12, 11)
	page("actor bob", store.AuditFilter{Actor: "bob", Limit: 3}, 28, 25, 22)
	page("actor bob, older than 22", store.AuditFilter{Actor: "bob", BeforeID: evs[22].ID, Limit: 3}, 19, 16, 13)
	page("action job.abort by alice", store.AuditFilter{Actor: "alice", Action: "job.abort"}, 27, 21, 15, 9, 3)
	page("time: minutes 5 to 8", store.AuditFilter{Since: t0.Add(5 * time.Minute), Until: t0.Add(8 * time.Minute)}, 7, 6, 5)
	page("time and action", store.AuditFilter{Since: t0.Add(5 * time.Minute), Until: t0.Add(9 * time.Minute), Action: "job.create"}, 8, 6)
	page("an actor of none", store.AuditFilter{Actor: "mallory"})
	page("default limit", store.AuditFilter{}, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
}
