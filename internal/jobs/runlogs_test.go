package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
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
	if seq, n := m.appendLog("j1", "c1", "stdout", jobproto.LinesText([]string{"one", "two"})); seq != 1 || n != 2 {
		t.Fatalf("first seq %d (%d lines), want 1 (2)", seq, n)
	}
	if seq, _ := m.appendLog("j1", "c1", "stderr", jobproto.LinesText([]string{"three\nwith a newline"})); seq != 3 {
		t.Fatalf("second seq %d, want 3", seq)
	}
	soFar := "[stdout] one\n[stdout] two\n[stderr] three with a newline\n"
	if got, ok := m.RunLogSoFar("j1", "c1"); !ok || string(got) != soFar {
		t.Fatalf("so far %q %v, want %q", got, ok, soFar)
	}
	// Past 64 bytes: the marker, then nothing more is kept, but the lines
	// are still numbered (the live log carries them).
	if seq, _ := m.appendLog("j1", "c1", "stdout", []byte("four is too long for the cap\n")); seq != 4 {
		t.Fatalf("seq at the cut %d, want 4", seq)
	}
	if seq, _ := m.appendLog("j1", "c1", "stdout", []byte("five\n")); seq != 5 {
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

// BenchmarkRunLog10000Lines takes a run's 10,000 output lines of 80
// bytes as the hub does, from the frames off the agent's channel to the
// stored log: "chunks" as agents send them to hubs that take log chunks
// (jobproto.MaxLogChunkBytes each), "lines" as older agents send them (Log
// messages of 100 lines, JSON).
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
	lines := make([]string, 10000)
	for i := range lines {
		lines[i] = fmt.Sprintf("%-79s", fmt.Sprintf("downloaded chunk %d of the file from data-a.example.org", i))
	}
	var chunks, messages [][]byte
	text := jobproto.LinesText(lines)
	for len(text) > 0 {
		n := min(len(text), jobproto.MaxLogChunkBytes)
		n = bytes.LastIndexByte(text[:n], '\n') + 1
		chunks = append(chunks, jobproto.AppendLogChunk(nil, "j", jobproto.StreamStdout, text[:n]))
		text = text[n:]
	}
	for i := 0; i < len(lines); i += 100 {
		msg, _ := json.Marshal(jobproto.Log{Type: jobproto.TypeLog, Job: "j", Stream: jobproto.StreamStdout, Lines: lines[i : i+100]})
		messages = append(messages, msg)
	}
	b.Run("chunks", func(b *testing.B) {
		for n := range b.N {
			job := fmt.Sprintf("c%d", n)
			for _, c := range chunks {
				hdr, text, err := jobproto.ParseLogChunk(c)
				if err != nil {
					b.Fatal(err)
				}
				m.PublishLog(job, "c1", hdr.Stream, text)
			}
			m.keepRunLog(context.Background(), job, "c1")
		}
	})
	b.Run("lines", func(b *testing.B) {
		for n := range b.N {
			job := fmt.Sprintf("l%d", n)
			for _, msg := range messages {
				var l jobproto.Log
				if err := json.Unmarshal(msg, &l); err != nil {
					b.Fatal(err)
				}
				m.PublishLog(job, "c1", l.Stream, jobproto.LinesText(l.Lines))
			}
			m.keepRunLog(context.Background(), job, "c1")
		}
	})
}
