package blob

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A spool is invisible until committed, then is the key's content (over
// what the key held), without a copy; one never committed leaves nothing.
func TestDirSpool(t *testing.T) {
	ctx := context.Background()
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.CreateSpool("j1/~logs/c1.txt")
	if errors.Is(err, errNoSpool) && runtime.GOOS != "linux" {
		t.Skip("no unnamed files here: callers use Put")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := d.Put(ctx, "j1/~logs/c1.txt", strings.NewReader("old"), 100, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteString("[stdout] one\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := s.ReadAt(buf, 9); err != nil || string(buf) != "one\n" {
		t.Fatalf("read back %q %v", buf, err)
	}
	if got := readKey(t, d, "j1/~logs/c1.txt"); got != "old" {
		t.Fatalf("before the commit the key holds %q", got)
	}
	info, err := s.Commit(ctx)
	if err != nil || info.Size != 13 || info.Key != "j1/~logs/c1.txt" {
		t.Fatalf("commit: %+v %v", info, err)
	}
	if got := readKey(t, d, "j1/~logs/c1.txt"); got != "[stdout] one\n" {
		t.Fatalf("after the commit the key holds %q", got)
	}
	list, err := d.List(ctx, "j1")
	if err != nil || len(list) != 1 {
		t.Fatalf("list %+v %v", list, err)
	}

	// Never committed: nothing left behind.
	s2, err := d.CreateSpool("j2/~logs/c1.txt")
	if err != nil {
		t.Fatal(err)
	}
	s2.WriteString("lost\n")
	s2.Close()
	ents, err := os.ReadDir(filepath.Join(d.Root(), "j2", "~logs"))
	if err != nil || len(ents) != 0 {
		t.Fatalf("an uncommitted spool left %v (%v)", ents, err)
	}
}

func readKey(t *testing.T, d *Dir, key string) string {
	t.Helper()
	r, _, err := d.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
