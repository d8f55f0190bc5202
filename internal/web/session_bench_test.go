package web

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkSessionGet measures what a dashboard request pays for its
// session now that sessions live in the store: decrypting the cookie and
// one indexed read of SQLite (the per-request cost without a cache), with
// 10,000 other sessions stored.
//
//	go test -run '^$' -bench SessionGet -benchtime 2s ./internal/web
func BenchmarkSessionGet(b *testing.B) {
	db := openSQLite(b)
	ss := newSessionStore(db, time.Now, slog.New(slog.DiscardHandler))
	for range 10_000 {
		ss.mustCreate(b, Session{Subject: "oidc:other", Role: RoleViewer}, time.Hour)
	}
	s := ss.mustCreate(b, Session{Subject: "oidc:alice", Name: "Alice", Role: RoleAdmin, Provider: "oidc"}, time.Hour)
	sealer, err := newCookieSealer([]byte("abcdefghijklmnopqrstuvwxyz012345"))
	if err != nil {
		b.Fatal(err)
	}
	h := &Handler{sessions: ss, sealer: sealer, log: slog.New(slog.DiscardHandler)}
	r := httptest.NewRequest("GET", "/ui/", nil)
	r.AddCookie(&http.Cookie{Name: SessionCookie, Value: sealer.Seal(SessionCookie, []byte(s.ID))})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			got, _, err := h.sessionOf(r)
			if err != nil || got == nil {
				b.Fatalf("sessionOf = %v, %v", got, err)
			}
		}
	})
}
