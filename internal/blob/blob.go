// Package blob stores result files behind a small interface, Store, so
// that what holds them (a directory on this node today; a shared
// directory, or per-node directories that fetch from their owner, in a
// cluster) is a wiring choice.
//
// Keys are slash-separated paths of non-empty segments ("job/agent/file"),
// none of them "." or "..", without NUL or backslash; the last segment
// does not start with '.' (a Store may keep its temporary files there). A
// key prefix names whole segments: "job" covers "job/agent/file", never
// "jobs/…".
//
// Contract of every Store:
//   - Put is all or nothing: a reader of the key sees the old content or
//     the new, never a part; content refused by its size limit or by the
//     caller's check, or cut short by its reader, leaves nothing behind.
//   - A stored file is durable before Put returns.
//   - Reading, listing and deleting may run concurrently with Put on any
//     key; the last Put of a key wins.
//
// This package imports the standard library only.
package blob

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"
)

// Errors of a Store. They are returned wrapped: test with errors.Is.
var (
	// ErrNotFound: no file is stored under the key.
	ErrNotFound = errors.New("blob: not found")
	// ErrTooLarge: Put's reader yielded more than its limit.
	ErrTooLarge = errors.New("blob: content above the size limit")
	// ErrInvalidKey: the key (or prefix) breaks the key rules above.
	ErrInvalidKey = errors.New("blob: invalid key")
)

// Info describes a stored file.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
	// SHA256 is the lower-case hex SHA-256 of the content; Put fills it
	// in (it hashes what it stores), Open and List leave it empty.
	SHA256 string
}

// Reader reads a stored file; Seek lets it serve byte ranges
// (http.ServeContent).
type Reader interface {
	io.ReadSeekCloser
}

// Store holds files by key. Implementations are safe for concurrent use.
type Store interface {
	// Put stores what r yields, to its end, under key, replacing any file
	// there. It reads at most limit+1 bytes: more than limit fails with
	// ErrTooLarge. check, if not nil, sees the content's Info (size and
	// SHA-256) before it replaces anything: an error from check is
	// returned as is and nothing is stored. An error of r is returned
	// wrapped (errors.Is finds os.ErrDeadlineExceeded of a stalled body).
	Put(ctx context.Context, key string, r io.Reader, limit int64, check func(Info) error) (Info, error)
	// Open returns the file stored under key, or ErrNotFound.
	Open(ctx context.Context, key string) (Reader, Info, error)
	// List returns the files under prefix (see the package doc), sorted
	// by key; none is not an error.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Delete removes every file under prefix, and prefix itself if it is
	// a key; removing nothing is not an error.
	Delete(ctx context.Context, prefix string) error
}

// validKey checks key (or a prefix, when prefix is true: its last segment
// may then start with '.') against the key rules of the package doc.
func validKey(key string, prefix bool) error {
	if key == "" || strings.ContainsAny(key, "\\\x00") {
		return ErrInvalidKey
	}
	segs := strings.Split(key, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return ErrInvalidKey
		}
	}
	if !prefix && strings.HasPrefix(segs[len(segs)-1], ".") {
		return ErrInvalidKey
	}
	return nil
}
