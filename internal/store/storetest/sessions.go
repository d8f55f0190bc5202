package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Session tests pass their own now: a session's expiry is measured on the
// caller's clock, so t0 serves.

func session(subject string, expires time.Time) store.Session {
	return store.Session{Subject: subject, Name: "Name of " + subject, Email: subject + "@example.org",
		Provider: "oidc", Role: "operator", CreatedAt: t0, ExpiresAt: expires}
}

func mustCreateSession(t *testing.T, s store.Store, id string, ss store.Session) {
	t.Helper()
	if err := s.CreateSession(ctxT(t), id, ss); err != nil {
		t.Fatalf("CreateSession(%q): %v", id, err)
	}
}

func getSession(t *testing.T, s store.Store, id string, now time.Time) (store.Session, bool) {
	t.Helper()
	ss, found, err := s.Session(ctxT(t), id, now)
	if err != nil {
		t.Fatalf("Session(%q): %v", id, err)
	}
	return ss, found
}

// testSessionRoundTrip: a session comes back as stored (times in UTC, to
// the microsecond), by its id only; a second session under the same id is
// refused and changes nothing.
func testSessionRoundTrip(t *testing.T, s store.Store) {
	in := store.Session{Subject: "oidc:alice", Name: "Alice Ä", Email: "alice@example.org", Provider: "oidc", Role: "admin",
		CreatedAt: t0.Add(1234567 * time.Nanosecond).In(time.FixedZone("X", 3600)), ExpiresAt: t0.Add(12 * time.Hour)}
	mustCreateSession(t, s, "id-alice", in)
	got, found := getSession(t, s, "id-alice", t0)
	want := in
	want.CreatedAt = t0.Add(1234 * time.Microsecond)
	if !found || got != want || got.CreatedAt.Location() != time.UTC || got.ExpiresAt.Location() != time.UTC {
		t.Fatalf("Session = %+v, %v; want %+v in UTC", got, found, want)
	}
	if _, found := getSession(t, s, "id-Alice", t0); found {
		t.Fatal("a session was found under another id")
	}
	if err := s.CreateSession(ctxT(t), "id-alice", session("github:mallory", t0.Add(time.Hour))); err == nil {
		t.Fatal("a second session under an existing id was stored")
	} else if errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a duplicate id: %v, want an error that does not wrap ErrUnavailable", err)
	}
	if got, _ := getSession(t, s, "id-alice", t0); got.Subject != "oidc:alice" {
		t.Fatalf("a refused duplicate replaced the session: %+v", got)
	}
	// A zero CreatedAt means now.
	before := time.Now().Add(-time.Minute)
	noCreated := session("oidc:bob", t0.Add(time.Hour))
	noCreated.CreatedAt = time.Time{}
	mustCreateSession(t, s, "id-bob", noCreated)
	if got, _ := getSession(t, s, "id-bob", t0); got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Minute)) {
		t.Errorf("a zero CreatedAt was stored as %v, want about now", got.CreatedAt)
	}
}

// testSessionExpiry: a session is returned strictly before its expiry,
// never at or after it, purged or not; the purge removes exactly the
// sessions expired at its now.
func testSessionExpiry(t *testing.T, s store.Store) {
	mustCreateSession(t, s, "short", session("oidc:a", t0.Add(time.Hour)))
	mustCreateSession(t, s, "long", session("oidc:a", t0.Add(2*time.Hour)))
	if _, found := getSession(t, s, "short", t0.Add(time.Hour-time.Microsecond)); !found {
		t.Fatal("a session was not found a microsecond before its expiry")
	}
	if _, found := getSession(t, s, "short", t0.Add(time.Hour)); found {
		t.Fatal("a session was found at its expiry")
	}
	n, err := s.PurgeExpiredSessions(ctxT(t), t0.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PurgeExpiredSessions = %d, %v; want 1 (short)", n, err)
	}
	if _, found := getSession(t, s, "long", t0.Add(time.Hour)); !found {
		t.Fatal("the purge removed a live session")
	}
	if _, found := getSession(t, s, "short", t0); found {
		t.Fatal("a purged session is still found (asked with an earlier now)")
	}
	if n, err := s.PurgeExpiredSessions(ctxT(t), t0.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("a second purge = %d, %v; want 0", n, err)
	}
}

// testSessionDelete: deleting a session ends it and says so once; a
// subject's sessions, expired or not, go together and no one else's, and
// deleting them again (as every node of a cluster does for one
// revocation) finds none and is no error.
func testSessionDelete(t *testing.T, s store.Store) {
	mustCreateSession(t, s, "m1", session("github:mallory", t0.Add(time.Hour)))
	mustCreateSession(t, s, "m2", session("github:mallory", t0.Add(time.Minute)))
	mustCreateSession(t, s, "m3", session("github:mallory", t0.Add(-time.Minute))) // expired
	mustCreateSession(t, s, "a1", session("oidc:alice", t0.Add(time.Hour)))
	mustCreateSession(t, s, "a2", session("github:mallory2", t0.Add(time.Hour)))

	ctx := ctxT(t)
	if ok, err := s.DeleteSession(ctx, "a1"); err != nil || !ok {
		t.Fatalf("DeleteSession(a1) = %v, %v; want true", ok, err)
	}
	if ok, err := s.DeleteSession(ctx, "a1"); err != nil || ok {
		t.Fatalf("DeleteSession(a1) again = %v, %v; want false, no error", ok, err)
	}
	if _, found := getSession(t, s, "a1", t0); found {
		t.Fatal("a deleted session is found")
	}
	if n, err := s.DeleteSubjectSessions(ctx, "github:mallory"); err != nil || n != 3 {
		t.Fatalf("DeleteSubjectSessions(mallory) = %d, %v; want 3", n, err)
	}
	if n, err := s.DeleteSubjectSessions(ctx, "github:mallory"); err != nil || n != 0 {
		t.Fatalf("DeleteSubjectSessions(mallory) again = %d, %v; want 0, no error", n, err)
	}
	for _, id := range []string{"m1", "m2"} {
		if _, found := getSession(t, s, id, t0); found {
			t.Fatalf("session %s of a deleted subject is found", id)
		}
	}
	if _, found := getSession(t, s, "a2", t0); !found {
		t.Fatal("deleting github:mallory's sessions removed github:mallory2's")
	}
	if n, err := s.PurgeExpiredSessions(ctx, t0); err != nil || n != 0 {
		t.Fatalf("PurgeExpiredSessions = %d, %v; want 0: the expired session went with its subject", n, err)
	}
}

// testSessionConcurrent: sessions created, read and deleted from many
// goroutines at once are all kept apart.
func testSessionConcurrent(t *testing.T, s store.Store) {
	const workers, each = 8, 10
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				subject := fmt.Sprintf("oidc:w%d", w)
				if err := s.CreateSession(ctx, id, session(subject, t0.Add(time.Hour))); err != nil {
					errs <- fmt.Errorf("create %s: %w", id, err)
					return
				}
				if got, found, err := s.Session(ctx, id, t0); err != nil || !found || got.Subject != subject {
					errs <- fmt.Errorf("session %s = %+v, %v, %v", id, got, found, err)
					return
				}
				if i%2 == 1 {
					if ok, err := s.DeleteSession(ctx, id); err != nil || !ok {
						errs <- fmt.Errorf("delete %s = %v, %v", id, ok, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range workers {
		if n, err := s.DeleteSubjectSessions(ctx, fmt.Sprintf("oidc:w%d", w)); err != nil || n != each/2 {
			t.Errorf("worker %d: DeleteSubjectSessions = %d, %v; want %d", w, n, err, each/2)
		}
	}
}

// testSessionValidates: an empty id or subject and a missing expiry are
// refused with an error that does not wrap ErrUnavailable.
func testSessionValidates(t *testing.T, s store.Store) {
	for name, tc := range map[string]struct {
		id string
		s  store.Session
	}{
		"empty id":      {"", session("oidc:a", t0.Add(time.Hour))},
		"empty subject": {"x", session("", t0.Add(time.Hour))},
		"no expiry":     {"y", session("oidc:a", time.Time{})},
	} {
		err := s.CreateSession(ctxT(t), tc.id, tc.s)
		if err == nil || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: %v, want a validation error", name, err)
		}
	}
	if n, err := s.PurgeExpiredSessions(ctxT(t), t0.Add(100*365*24*time.Hour)); err != nil || n != 0 {
		t.Errorf("PurgeExpiredSessions after refused creations = %d, %v; want 0", n, err)
	}
}

// sessionCalls are the SessionStore's methods, for testUseAfterClose.
func sessionCalls(s store.Store, ctx context.Context) map[string]func() error {
	return map[string]func() error{
		"CreateSession": func() error { return s.CreateSession(ctx, "id", session("oidc:a", t0.Add(time.Hour))) },
		"Session":       func() error { _, _, err := s.Session(ctx, "id", t0); return err },
		"DeleteSession": func() error { _, err := s.DeleteSession(ctx, "id"); return err },
		"DeleteSubjectSessions": func() error {
			_, err := s.DeleteSubjectSessions(ctx, "oidc:a")
			return err
		},
		"PurgeExpiredSessions": func() error { _, err := s.PurgeExpiredSessions(ctx, t0); return err },
	}
}
