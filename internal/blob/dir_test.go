package blob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The Store contract is tested by blobtest (store_test.go); these are
// Dir's own promises about its temporary files.

func newDir(t *testing.T) *Dir {
	t.Helper()
	d, err := NewDir(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestDirRefusedPutsLeaveNoTemporaryFile: content over the limit, refused
// by the check, or cut short by its reader leaves only the file it would
// have replaced in the directory.
func TestDirRefusedPutsLeaveNoTemporaryFile(t *testing.T) {
	s := newDir(t)
	ctx := context.Background()
	if _, err := s.Put(ctx, "j/a/f", strings.NewReader("old"), 3, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "j/a/f", strings.NewReader("too long"), 3, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v, want ErrTooLarge", err)
	}
	errBadSum := errors.New("checksum differs")
	if _, err := s.Put(ctx, "j/a/f", strings.NewReader("new"), 10, func(Info) error { return errBadSum }); err != errBadSum {
		t.Fatalf("refused by check: %v", err)
	}
	cut := io.MultiReader(strings.NewReader("par"), errReader{os.ErrDeadlineExceeded})
	if _, err := s.Put(ctx, "j/a/f", cut, 10, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("cut short: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(s.Root(), "j", "a"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory after refused Puts: %v %v, want only f", entries, err)
	}
}

// TestDirTemporaryNamesAreNotKeys: a key cannot name a temporary file.
func TestDirTemporaryNamesAreNotKeys(t *testing.T) {
	s := newDir(t)
	k := "j/" + tempPrefix + "x"
	if _, err := s.Put(context.Background(), k, strings.NewReader(""), 0, nil); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Put %q: %v, want ErrInvalidKey", k, err)
	}
	if _, _, err := s.Open(context.Background(), k); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Open %q: %v, want ErrInvalidKey", k, err)
	}
}

// TestDirListSkipsTemporaryFiles: the temporary file of a Put in progress
// exists and is not listed.
func TestDirListSkipsTemporaryFiles(t *testing.T) {
	s := newDir(t)
	ctx := context.Background()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, "j/a/big", pr, 1<<20, nil)
		done <- err
	}()
	pw.Write(bytes.Repeat([]byte{'x'}, 1000)) // returns once Put has read it: the temporary file exists
	matches, _ := filepath.Glob(filepath.Join(s.Root(), "j", "a", tempPrefix+"*"))
	if len(matches) != 1 {
		t.Fatalf("temporary files during Put: %v", matches)
	}
	if infos, err := s.List(ctx, "j"); err != nil || len(infos) != 0 {
		t.Fatalf("listed during Put: %+v %v", infos, err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
