package sqlite

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// TestSessionIDNotStoredInClear: the database file (and its WAL) holds the
// SHA-256 of a session id, never the id, so a copy of the database opens
// no dashboard session.
func TestSessionIDNotStoredInClear(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(t.Context(), filepath.Join(dir, FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const id = "Zm9yLXRoZS10ZXN0LW9ubHk" // as web makes them: 128 bits, base64url
	exp := time.Now().Add(time.Hour)
	if err := s.CreateSession(t.Context(), id, store.Session{Subject: "oidc:alice", Role: "admin", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.Session(t.Context(), id, time.Now()); err != nil || !found {
		t.Fatalf("Session = %v, %v", found, err)
	}
	var files, hashes int
	for _, name := range []string{FileName, FileName + "-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		files++
		if bytes.Contains(b, []byte(id)) {
			t.Fatalf("%s holds the session id in clear", name)
		}
		if bytes.Contains(b, store.SessionIDHash(id)) {
			hashes++
		}
	}
	if files == 0 || hashes == 0 {
		t.Fatalf("%d files read, %d hold the id's hash: the test looked in the wrong place", files, hashes)
	}
}
