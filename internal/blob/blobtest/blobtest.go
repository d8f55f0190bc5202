// Package blobtest is the conformance suite of blob.Store: every
// implementation runs it from its own tests,
//
//	func TestStore(t *testing.T) { blobtest.Run(t, newStore) }
//
// The files it stores span several chunks of a store that keeps files in
// chunks of 16 KiB or less: give such a store a small chunk size in tests
// so that reading across chunk boundaries is covered.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/blob"
)

// Run runs the suite; newStore returns an empty Store, cleaned up by the
// test.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, blob.Store)
	}{
		{"PutOpenListDelete", testPutOpenListDelete},
		{"EmptyAndMultiChunkFiles", testEmptyAndMultiChunkFiles},
		{"Seek", testSeek},
		{"RefusalsLeaveTheOldFile", testRefusalsLeaveTheOldFile},
		{"InvalidKeys", testInvalidKeys},
		{"PutInProgressIsInvisible", testPutInProgressIsInvisible},
		{"ConcurrentPutsAndReads", testConcurrentPutsAndReads},
		{"DeleteWhileReading", testDeleteWhileReading},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// Put stores content under key or fails the test.
func Put(t testing.TB, s blob.Store, key, content string) blob.Info {
	t.Helper()
	info, err := s.Put(context.Background(), key, strings.NewReader(content), int64(len(content)), nil)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return info
}

// Read returns the content stored under key or fails the test; it checks
// the size Open reports against what it reads.
func Read(t testing.TB, s blob.Store, key string) string {
	t.Helper()
	r, info, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("open %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if info.Size != int64(len(b)) || info.Key != key {
		t.Fatalf("open %s: Info %+v, read %d bytes", key, info, len(b))
	}
	return string(b)
}

// Keys lists the keys under prefix, separated by spaces.
func Keys(t testing.TB, s blob.Store, prefix string) string {
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

// pattern returns n bytes in which every 4-byte group at an offset
// divisible by 4 holds that offset, so a read from the wrong place shows.
func pattern(n int, salt byte) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i>>(8*(i%4))) ^ salt
	}
	return string(b)
}

func testPutOpenListDelete(t *testing.T, s blob.Store) {
	ctx := context.Background()
	info := Put(t, s, "j1/c1/out.csv", "a,b\n1,2\n")
	sum := sha256.Sum256([]byte("a,b\n1,2\n"))
	if info.Key != "j1/c1/out.csv" || info.Size != 8 || info.SHA256 != hex.EncodeToString(sum[:]) || info.ModTime.IsZero() {
		t.Fatalf("Put info: %+v", info)
	}
	if got := Read(t, s, "j1/c1/out.csv"); got != "a,b\n1,2\n" {
		t.Fatalf("read back %q", got)
	}
	Put(t, s, "j1/c1/out.csv", "replaced")
	if got := Read(t, s, "j1/c1/out.csv"); got != "replaced" {
		t.Fatalf("after a second Put: %q", got)
	}
	Put(t, s, "j1/c2/log.txt", "x")
	Put(t, s, "j10/c1/a", "y")  // "j1" must not cover "j10"
	Put(t, s, "j1-x/c1/a", "z") // nor "j1-x" ('-' sorts before '/')
	Put(t, s, "j1/c1.b/f", "w") // '.' sorts before '/' too
	Put(t, s, "j1/c1/out.csvx", "v")
	if got := Keys(t, s, "j1"); got != "j1/c1.b/f j1/c1/out.csv j1/c1/out.csvx j1/c2/log.txt" {
		t.Fatalf("List j1: %q", got)
	}
	if got := Keys(t, s, "j1/c1/out.csv"); got != "j1/c1/out.csv" {
		t.Fatalf("List of a key: %q", got)
	}
	if got := Keys(t, s, "nosuch"); got != "" {
		t.Fatalf("List of nothing: %q", got)
	}
	infos, err := s.List(ctx, "j1/c2")
	if err != nil || len(infos) != 1 || infos[0].Size != 1 || infos[0].ModTime.IsZero() {
		t.Fatalf("List j1/c2: %+v %v", infos, err)
	}
	if err := s.Delete(ctx, "j1/c2"); err != nil {
		t.Fatal(err)
	}
	if got := Keys(t, s, "j1"); got != "j1/c1.b/f j1/c1/out.csv j1/c1/out.csvx" {
		t.Fatalf("after Delete j1/c2: %q", got)
	}
	if err := s.Delete(ctx, "j1/c1/out.csv"); err != nil {
		t.Fatal(err)
	}
	if got := Keys(t, s, "j1"); got != "j1/c1.b/f j1/c1/out.csvx" {
		t.Fatalf("after Delete of a key: %q", got)
	}
	if err := s.Delete(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(ctx, "j1/c1/out.csvx"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Open after Delete: %v, want ErrNotFound", err)
	}
	if _, _, err := s.Open(ctx, "j1/c1"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Open of a prefix that is no file: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "j1"); err != nil {
		t.Fatalf("Delete of nothing: %v", err)
	}
	if got := Keys(t, s, "j10") + " " + Keys(t, s, "j1-x"); got != "j10/c1/a j1-x/c1/a" {
		t.Fatalf("Delete j1 touched j10 or j1-x: %q", got)
	}
}

func testEmptyAndMultiChunkFiles(t *testing.T, s blob.Store) {
	if info := Put(t, s, "j/a/empty", ""); info.Size != 0 {
		t.Fatalf("empty file: %+v", info)
	}
	if got := Read(t, s, "j/a/empty"); got != "" {
		t.Fatalf("empty file read back as %q", got)
	}
	for _, n := range []int{1, 16 << 10, 16<<10 + 1, 200 << 10} {
		content := pattern(n, 7)
		Put(t, s, "j/a/f", content)
		if got := Read(t, s, "j/a/f"); got != content {
			t.Fatalf("%d bytes: read back differs (%d bytes)", n, len(got))
		}
	}
}

func testSeek(t *testing.T, s blob.Store) {
	content := pattern(100<<10+123, 1)
	Put(t, s, "j/a/f", content)
	r, info, err := s.Open(context.Background(), "j/a/f")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	size := int64(len(content))
	if end, err := r.Seek(0, io.SeekEnd); end != size || err != nil || info.Size != size {
		t.Fatalf("Seek to the end: %d %v; Info.Size %d; want %d", end, err, info.Size, size)
	}
	readAt := func(off int64, whence int, n int, want int64) {
		t.Helper()
		pos, err := r.Seek(off, whence)
		if err != nil || pos != want {
			t.Fatalf("Seek(%d, %d) = %d, %v; want %d", off, whence, pos, err, want)
		}
		buf := make([]byte, n)
		got, err := io.ReadFull(r, buf)
		wantN := min(int64(n), max(size-want, 0))
		if int64(got) != wantN || (err != nil && wantN == int64(n)) {
			t.Fatalf("read %d at %d: %d bytes, %v; want %d", n, want, got, err, wantN)
		}
		if string(buf[:got]) != content[min(want, size):min(want+int64(got), size)] {
			t.Fatalf("read %d at %d: wrong bytes", n, want)
		}
	}
	readAt(5000, io.SeekStart, 40000, 5000)       // across chunk boundaries
	readAt(-45000+1000, io.SeekCurrent, 10, 1000) // back, from the current position
	readAt(-100, io.SeekEnd, 100, size-100)       // the tail
	readAt(0, io.SeekStart, 10, 0)                // the head again
	readAt(16<<10, io.SeekStart, 16<<10, 16<<10)  // one chunk of 16 KiB exactly
	readAt(size, io.SeekStart, 10, size)          // at the end: EOF
	readAt(size+10, io.SeekStart, 10, size+10)    // past the end: EOF, not an error
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek before the start: no error")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// testRefusalsLeaveTheOldFile: content over the limit, refused by the
// check, or cut short by its reader is not stored and leaves the file it
// would have replaced as it was; so does a canceled context.
func testRefusalsLeaveTheOldFile(t *testing.T, s blob.Store) {
	ctx := context.Background()
	old := pattern(40<<10, 3)
	Put(t, s, "j/a/f", old)
	long := pattern(50<<10, 4)
	if _, err := s.Put(ctx, "j/a/f", strings.NewReader(long), int64(len(long))-1, nil); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("over the limit: %v, want ErrTooLarge", err)
	}
	if _, err := s.Put(ctx, "j/a/new", strings.NewReader(long), 100, nil); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("over the limit: %v, want ErrTooLarge", err)
	}
	errBadSum := errors.New("checksum differs")
	var seen blob.Info
	_, err := s.Put(ctx, "j/a/f", strings.NewReader(long), int64(len(long)), func(i blob.Info) error { seen = i; return errBadSum })
	if err != errBadSum {
		t.Fatalf("refused by check: %v, want the check's error as is", err)
	}
	sum := sha256.Sum256([]byte(long))
	if seen.Size != int64(len(long)) || seen.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("check saw %+v", seen)
	}
	cut := io.MultiReader(strings.NewReader(long), errReader{os.ErrDeadlineExceeded})
	if _, err := s.Put(ctx, "j/a/f", cut, 1<<20, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("cut short: %v, want the reader's error wrapped", err)
	}
	// An HTTP body shorter than its Content-Length ends so: not an end.
	cut = io.MultiReader(strings.NewReader(long[:32<<10]), errReader{io.ErrUnexpectedEOF})
	if _, err := s.Put(ctx, "j/a/f", cut, 1<<20, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut short: %v, want io.ErrUnexpectedEOF wrapped", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(canceled, "j/a/f", strings.NewReader("x"), 1, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v, want context.Canceled", err)
	}
	if got := Read(t, s, "j/a/f"); got != old {
		t.Fatalf("after refused Puts: %d bytes, want the old %d", len(got), len(old))
	}
	if got := Keys(t, s, "j"); got != "j/a/f" {
		t.Fatalf("after refused Puts: %q, want only j/a/f", got)
	}
}

// testInvalidKeys: keys that would leave a directory, name nothing or
// name a reserved (dot) file are refused by every method.
func testInvalidKeys(t *testing.T, s blob.Store) {
	ctx := context.Background()
	for _, k := range []string{"", "/j/a", "j//a", "j/a/", "../x", "j/../../x", "j/./a", "j\\a", "j/a\x00", "j/.hidden", "j/\xff"} {
		if _, err := s.Put(ctx, k, strings.NewReader(""), 0, nil); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put %q: %v, want ErrInvalidKey", k, err)
		}
		if _, _, err := s.Open(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open %q: %v, want ErrInvalidKey", k, err)
		}
	}
	for _, p := range []string{"", "..", "j/..", "/", "j/", "j\xff"} {
		if err := s.Delete(ctx, p); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Delete %q: %v, want ErrInvalidKey", p, err)
		}
		if _, err := s.List(ctx, p); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("List %q: %v, want ErrInvalidKey", p, err)
		}
	}
}

// testPutInProgressIsInvisible: a file being written is neither listed
// nor opened, and a Put replacing a file leaves the old one readable
// until it completes.
func testPutInProgressIsInvisible(t *testing.T, s blob.Store) {
	ctx := context.Background()
	Put(t, s, "j/a/old", "old")
	for _, key := range []string{"j/a/big", "j/a/old"} {
		before := Keys(t, s, "j")
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := s.Put(ctx, key, pr, 1<<20, nil)
			done <- err
		}()
		// Each Write returns once Put has read it: after the second, Put
		// has begun storing.
		pw.Write(bytes.Repeat([]byte{'x'}, 40<<10))
		pw.Write(bytes.Repeat([]byte{'x'}, 40<<10))
		if got := Keys(t, s, "j"); got != before {
			t.Fatalf("listed during the Put of %s: %q", key, got)
		}
		if key == "j/a/old" {
			if got := Read(t, s, key); got != "old" {
				t.Fatalf("during its replacement: %q", got)
			}
		} else if _, _, err := s.Open(ctx, key); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Open during the Put: %v, want ErrNotFound", err)
		}
		pw.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := Keys(t, s, "j"); got != "j/a/big j/a/old" {
		t.Fatalf("after the Puts: %q", got)
	}
	if got := Read(t, s, "j/a/old"); got != strings.Repeat("x", 80<<10) {
		t.Fatalf("replaced file: %d bytes", len(got))
	}
}

// testConcurrentPutsAndReads: readers see one whole version or the
// other, never a mix or a part; a Reader may fail with ErrReplaced
// instead.
func testConcurrentPutsAndReads(t *testing.T, s blob.Store) {
	ctx := context.Background()
	a, b := pattern(64<<10, 'a'), pattern(64<<10, 'b')
	Put(t, s, "j/c/f", a)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 10 {
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
			for range 25 {
				r, _, err := s.Open(ctx, "j/c/f")
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(r)
				r.Close()
				if errors.Is(err, blob.ErrReplaced) {
					continue
				}
				if err != nil || (string(got) != a && string(got) != b) {
					t.Errorf("read a mixed or partial version (%d bytes): %v", len(got), err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := Read(t, s, "j/c/f"); got != a && got != b {
		t.Fatalf("after the Puts: a mix (%d bytes)", len(got))
	}
}

// testDeleteWhileReading: a Reader whose file is deleted goes on with the
// content it was opened on or fails with ErrReplaced; never a part that
// looks whole.
func testDeleteWhileReading(t *testing.T, s blob.Store) {
	content := pattern(100<<10, 9)
	Put(t, s, "j/a/f", content)
	r, _, err := s.Open(context.Background(), "j/a/f")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(context.Background(), "j"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if errors.Is(err, blob.ErrReplaced) {
		return
	}
	if err != nil || string(head)+string(rest) != content {
		t.Fatalf("read on after Delete: %d bytes, %v; want all %d or ErrReplaced", len(head)+len(rest), err, len(content))
	}
}
