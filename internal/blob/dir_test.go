package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func newDir(t *testing.T) *Dir {
	t.Helper()
	d, err := NewDir(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func put(t *testing.T, s Store, key, content string) Info {
	t.Helper()
	info, err := s.Put(context.Background(), key, strings.NewReader(content), int64(len(content)), nil)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return info
}

func read(t *testing.T, s Store, key string) string {
	t.Helper()
	r, info, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("open %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(b)) {
		t.Fatalf("open %s: Info.Size %d, read %d bytes", key, info.Size, len(b))
	}
	return string(b)
}

func keys(t *testing.T, s Store, prefix string) string {
	t.Helper()
	infos, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("list %s: %v", prefix, err)
	}
	var ks []string
	for _, i := range infos {
		ks = append(ks, i.Key)
	}
	return strings.Join(ks, " ")
}

// TestDirStore runs the Store contract against Dir.
func TestDirStore(t *testing.T) {
	s := newDir(t)
	ctx := context.Background()
	info := put(t, s, "j1/c1/out.csv", "a,b\n1,2\n")
	sum := sha256.Sum256([]byte("a,b\n1,2\n"))
	if info.Key != "j1/c1/out.csv" || info.Size != 8 || info.SHA256 != hex.EncodeToString(sum[:]) || info.ModTime.IsZero() {
		t.Fatalf("Put info: %+v", info)
	}
	if got := read(t, s, "j1/c1/out.csv"); got != "a,b\n1,2\n" {
		t.Fatalf("read back %q", got)
	}
	put(t, s, "j1/c1/out.csv", "replaced")
	if got := read(t, s, "j1/c1/out.csv"); got != "replaced" {
		t.Fatalf("after a second Put: %q", got)
	}
	put(t, s, "j1/c2/log.txt", "x")
	put(t, s, "j10/c1/a", "y") // "j1" must not cover "j10"
	if got := keys(t, s, "j1"); got != "j1/c1/out.csv j1/c2/log.txt" {
		t.Fatalf("List j1: %q", got)
	}
	if got := keys(t, s, "j1/c1/out.csv"); got != "j1/c1/out.csv" {
		t.Fatalf("List of a key: %q", got)
	}
	if got := keys(t, s, "nosuch"); got != "" {
		t.Fatalf("List of nothing: %q", got)
	}
	if err := s.Delete(ctx, "j1/c2"); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, s, "j1"); got != "j1/c1/out.csv" {
		t.Fatalf("after Delete j1/c2: %q", got)
	}
	if err := s.Delete(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(ctx, "j1/c1/out.csv"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open after Delete: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "j1"); err != nil {
		t.Fatalf("Delete of nothing: %v", err)
	}
	if got := keys(t, s, "j10"); got != "j10/c1/a" {
		t.Fatalf("Delete j1 touched j10: %q", got)
	}
}

// TestDirPutRefusalsLeaveTheOldFile: content over the limit, refused by
// the check, or cut short by its reader is not stored, leaves the file it
// would have replaced as it was and no temporary file behind.
func TestDirPutRefusalsLeaveTheOldFile(t *testing.T) {
	s := newDir(t)
	ctx := context.Background()
	put(t, s, "j/a/f", "old")
	if _, err := s.Put(ctx, "j/a/f", strings.NewReader("too long"), 3, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v, want ErrTooLarge", err)
	}
	errBadSum := errors.New("checksum differs")
	var seen Info
	_, err := s.Put(ctx, "j/a/f", strings.NewReader("new"), 10, func(i Info) error { seen = i; return errBadSum })
	if err != errBadSum {
		t.Fatalf("refused by check: %v, want the check's error as is", err)
	}
	if seen.Size != 3 || seen.SHA256 == "" {
		t.Fatalf("check saw %+v", seen)
	}
	cut := io.MultiReader(strings.NewReader("par"), errReader{os.ErrDeadlineExceeded})
	if _, err := s.Put(ctx, "j/a/f", cut, 10, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("cut short: %v, want the reader's error wrapped", err)
	}
	if got := read(t, s, "j/a/f"); got != "old" {
		t.Fatalf("after refused Puts: %q, want old", got)
	}
	entries, err := os.ReadDir(filepath.Join(s.Root(), "j", "a"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory after refused Puts: %v %v, want only f", entries, err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestDirInvalidKeys: keys that would leave the directory, name nothing
// or collide with temporary files are refused.
func TestDirInvalidKeys(t *testing.T) {
	s := newDir(t)
	ctx := context.Background()
	for _, k := range []string{"", "/j/a", "j//a", "j/a/", "../x", "j/../../x", "j/./a", "j\\a", "j/a\x00", "j/.hidden", "j/" + tempPrefix + "x"} {
		if _, err := s.Put(ctx, k, strings.NewReader(""), 0, nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Put %q: %v, want ErrInvalidKey", k, err)
		}
		if _, _, err := s.Open(ctx, k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Open %q: %v, want ErrInvalidKey", k, err)
		}
	}
	for _, p := range []string{"", "..", "j/..", "/"} {
		if err := s.Delete(ctx, p); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Delete %q: %v, want ErrInvalidKey", p, err)
		}
		if _, err := s.List(ctx, p); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("List %q: %v, want ErrInvalidKey", p, err)
		}
	}
}

// TestDirListSkipsFilesBeingWritten: a Put in progress is not listed.
func TestDirListSkipsFilesBeingWritten(t *testing.T) {
	s := newDir(t)
	ctx := context.Background()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, "j/a/big", pr, 1<<20, nil)
		done <- err
	}()
	pw.Write(bytes.Repeat([]byte{'x'}, 1000)) // returns once Put has read it: the temporary file exists
	if got := keys(t, s, "j"); got != "" {
		t.Fatalf("listed during Put: %q", got)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := keys(t, s, "j"); got != "j/a/big" {
		t.Fatalf("after Put: %q", got)
	}
}

// TestDirConcurrentPutsAndReads: readers see one whole version or the
// other, never a mix or a part.
func TestDirConcurrentPutsAndReads(t *testing.T) {
	s := newDir(t)
	ctx := context.Background()
	a, b := strings.Repeat("a", 64<<10), strings.Repeat("b", 64<<10)
	put(t, s, "j/c/f", a)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 20 {
				v := a
				if i%2 == 1 {
					v = b
				}
				if _, err := s.Put(ctx, "j/c/f", strings.NewReader(v), int64(len(v)), nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 50 {
				r, _, err := s.Open(ctx, "j/c/f")
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil || (string(got) != a && string(got) != b) {
					t.Errorf("read a mixed or partial version (%d bytes): %v", len(got), err)
					return
				}
			}
		})
	}
	wg.Wait()
}
