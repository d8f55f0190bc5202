package jobs

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
)

// readBlob returns the content stored under key.
func readBlob(t testing.TB, m *Manager, key string) string {
	t.Helper()
	r, _, err := m.blobs.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("open %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRunLogSeqCutAndStore(t *testing.T) {
	m := startNodeWith(t, Config{Store: openTestStore(t), NodeID: "a", MaxLogBytes: 64}).Manager
	if seq := m.appendLog("j1", "c1", "stdout", []string{"one", "two"}); seq != 1 {
		t.Fatalf("first seq %d, want 1", seq)
	}
	if seq := m.appendLog("j1", "c1", "stderr", []string{"three\nwith a newline"}); seq != 3 {
		t.Fatalf("second seq %d, want 3", seq)
	}
	soFar := "[stdout] one\n[stdout] two\n[stderr] three with a newline\n"
	if got, ok := m.RunLogSoFar("j1", "c1"); !ok || string(got) != soFar {
		t.Fatalf("so far %q %v, want %q", got, ok, soFar)
	}
	// Past 64 bytes: the marker, then nothing more is kept, but the lines
	// are still numbered (the live log carries them).
	if seq := m.appendLog("j1", "c1", "stdout", []string{"four is too long for the cap"}); seq != 4 {
		t.Fatalf("seq at the cut %d, want 4", seq)
	}
	if seq := m.appendLog("j1", "c1", "stdout", []string{"five"}); seq != 5 {
		t.Fatalf("seq after the cut %d, want 5", seq)
	}
	got, _ := m.RunLogSoFar("j1", "c1")
	if !strings.HasPrefix(string(got), soFar+"[switchboard] log cut here") || strings.Contains(string(got), "four") || strings.Contains(string(got), "five") {
		t.Fatalf("after the cut: %q", got)
	}
	m.keepRunLog(context.Background(), "j1", "c1")
	if stored := readBlob(t, m, LogKey("j1", "c1")); stored != string(got) {
		t.Fatalf("stored %q, want %q", stored, got)
	}
	if _, ok := m.RunLogSoFar("j1", "c1"); ok {
		t.Fatal("a stored run's spool is still there")
	}
	if agent, ok := LogAgent("j1", LogKey("j1", "c1")); !ok || agent != "c1" {
		t.Fatalf("LogAgent: %q %v", agent, ok)
	}
}

// BenchmarkRunLog10000Lines spools a run's 10,000 lines of 80 bytes (in
// messages of 100 lines, as agents batch them) and stores its log.
func BenchmarkRunLog10000Lines(b *testing.B) {
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), sqlite.FileName), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	dir, err := blob.NewDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(Config{Store: st, Blobs: dir, NodeID: "a"}) // not started: only its logs are used
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]string, 100)
	for i := range batch {
		batch[i] = fmt.Sprintf("%-79s", fmt.Sprintf("downloaded chunk %d of the file from data-a.example.org", i))
	}
	b.ResetTimer()
	for n := range b.N {
		job := fmt.Sprintf("j%d", n)
		for range 100 {
			m.appendLog(job, "c1", "stdout", batch)
		}
		m.keepRunLog(context.Background(), job, "c1")
	}
}
