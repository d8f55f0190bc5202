// Package blob stores result files behind a small interface, Store, so
// that what holds them is a wiring choice: a directory (Dir) for a node
// alone or a directory shared by a cluster's nodes, or the cluster's
// PostgreSQL database (postgres.Store.Blobs). The conformance suite of
// every Store is package blobtest.
//
// Keys are slash-separated paths of non-empty segments ("job/agent/file"),
// none of them "." or "..", in UTF-8 without NUL or backslash (a database
// keeps them as text); the last segment does not start with '.' (a Store
// may keep its temporary files there). A key prefix names whole segments:
// "job" covers "job/agent/file", never "jobs/…".
//
// Contract of every Store:
//   - Put is all or nothing: a reader of the key sees the old content or
//     the new, never a part; content refused by its size limit or by the
//     caller's check, or cut short by its reader, leaves nothing behind.
//   - A stored file is durable before Put returns.
//   - Reading, listing and deleting may run concurrently with Put on any
//     key; the last Put of a key wins. A Reader yields the content it was
//     opened on, whole, or fails: a Store that cannot keep replaced or
//     deleted content readable while it is read (PostgreSQL) fails the
//     Reader with ErrReplaced rather than yield a mix. (Dir keeps it
//     readable: an open file outlives its name.)
//
// This package imports the standard library only.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors of a Store. They are returned wrapped: test with errors.Is.
var (
	// ErrNotFound: no file is stored under the key.
	ErrNotFound = errors.New("blob: not found")
	// ErrTooLarge: Put's reader yielded more than its limit.
	ErrTooLarge = errors.New("blob: content above the size limit")
	// ErrInvalidKey: the key (or prefix) breaks the key rules above.
	ErrInvalidKey = errors.New("blob: invalid key")
	// ErrReplaced: the file a Reader was reading was replaced or deleted
	// meanwhile, by a Store that cannot keep it readable (see Store).
	ErrReplaced = errors.New("blob: file replaced or deleted while being read")
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

// CheckKey returns an error wrapping ErrInvalidKey if key breaks the key
// rules of the package doc. Every Store checks its keys with it.
func CheckKey(key string) error {
	if err := validKey(key, false); err != nil {
		return fmt.Errorf("%w: %q", err, key)
	}
	return nil
}

// CheckPrefix is CheckKey for the prefix of List and Delete: its last
// segment may start with '.'.
func CheckPrefix(prefix string) error {
	if err := validKey(prefix, true); err != nil {
		return fmt.Errorf("%w: %q", err, prefix)
	}
	return nil
}

// validKey checks key (or a prefix, when prefix is true: its last segment
// may then start with '.') against the key rules of the package doc.
func validKey(key string, prefix bool) error {
	if key == "" || strings.ContainsAny(key, "\\\x00") || !utf8.ValidString(key) {
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
