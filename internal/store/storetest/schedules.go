package storetest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// testSchedules: a schedule round-trips (UTC, microseconds), is replaced
// by a second put, listed by name, deleted once; AdvanceSchedule moves
// Next only from the value given, so of concurrent callers one wins.
func testSchedules(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	want := store.Schedule{Definition: "nightly <&> ü", Owner: "alice", Every: 90*time.Minute + 1500*time.Nanosecond,
		Next: tz(time.Hour), MaxRunning: 2, CreatedAt: tz(0)}
	if err := s.PutSchedule(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Schedule(ctx, want.Definition)
	if err != nil || got.Definition != want.Definition || got.Owner != "alice" || got.Every != 90*time.Minute+time.Microsecond ||
		!got.Next.Equal(want.Next.Truncate(time.Microsecond)) || got.Next.Location() != time.UTC || got.MaxRunning != 2 ||
		!got.CreatedAt.Equal(want.CreatedAt.Truncate(time.Microsecond)) {
		t.Fatalf("Schedule: %+v %v, want %+v", got, err, want)
	}
	once := store.Schedule{Definition: "A once", Owner: "bob", Next: tz(2 * time.Hour), MaxRunning: 1}
	if err := s.PutSchedule(ctx, once); err != nil {
		t.Fatal(err)
	}
	want.Every, want.MaxRunning = time.Minute, 1
	if err := s.PutSchedule(ctx, want); err != nil { // replaces
		t.Fatal(err)
	}
	all, err := s.Schedules(ctx)
	if err != nil || len(all) != 2 || all[0].Definition != "A once" || all[0].Every != 0 || all[1].Every != time.Minute || all[1].MaxRunning != 1 {
		t.Fatalf("Schedules: %+v %v", all, err)
	}
	// Advancing from a Next that is not the stored one changes nothing.
	if moved, err := s.AdvanceSchedule(ctx, "A once", tz(time.Hour), tz(3*time.Hour)); err != nil || moved {
		t.Fatalf("AdvanceSchedule from a stale Next: %v %v", moved, err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	from := all[0].Next
	for range 8 {
		wg.Go(func() {
			moved, err := s.AdvanceSchedule(ctx, "A once", from, tz(3*time.Hour))
			if err != nil {
				t.Errorf("AdvanceSchedule: %v", err)
			}
			if moved {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent AdvanceSchedule calls won, want 1", wins.Load())
	}
	if got, err := s.Schedule(ctx, "A once"); err != nil || !got.Next.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("after AdvanceSchedule: %+v %v", got, err)
	}
	if moved, err := s.AdvanceSchedule(ctx, "nope", from, tz(3*time.Hour)); err != nil || moved {
		t.Fatalf("AdvanceSchedule of an unknown schedule: %v %v", moved, err)
	}
	if err := s.DeleteSchedule(ctx, "A once"); err != nil {
		t.Fatal(err)
	}
	checkNotFound(t, "DeleteSchedule twice", s.DeleteSchedule(ctx, "A once"))
	_, err = s.Schedule(ctx, "A once")
	checkNotFound(t, "Schedule after DeleteSchedule", err)
	for _, bad := range []store.Schedule{
		{Definition: "", Next: t0, MaxRunning: 1},
		{Definition: "x", Next: t0, MaxRunning: 0},
		{Definition: "x", MaxRunning: 1},
		{Definition: "x", Next: t0, MaxRunning: 1, Every: -time.Second},
	} {
		checkInvalid(t, "PutSchedule of an invalid schedule", s.PutSchedule(ctx, bad))
	}
}
