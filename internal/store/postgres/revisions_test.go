package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
)

// BenchmarkRevocationPoll measures what each node's revocation catch-up
// costs the database every --revocation-poll: "revision" is the poll that
// finds nothing new (the usual case, the bus having delivered everything),
// "changes" the read of one missed change.
func BenchmarkRevocationPoll(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, pgtest.Start(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for i := range 100 {
		if _, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: string(rune('a' + i%26)), ExpiresAt: time.Now().Add(time.Hour)}, store.AuditEvent{Action: "revoke"}); err != nil {
			b.Fatal(err)
		}
	}
	current, err := s.RevocationRevision(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("revision", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.RevocationRevision(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("changes", func(b *testing.B) {
		for b.Loop() {
			page, err := s.RevocationChanges(context.Background(), current-1, 0)
			if err != nil || len(page.Changes) != 1 {
				b.Fatalf("%d changes, %v", len(page.Changes), err)
			}
		}
	})
}
