package blob

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Spool is a file being written that Commit makes the content of a key
// without copying it (Dir.CreateSpool): for content written a little at a
// time, such as a job run's log, that would otherwise be written once to a
// temporary file and then again through Put.
type Spool struct {
	*os.File // read and written by its user; closed by its user, after Commit or not
	d        *Dir
	key      string
}

// errNoSpool is returned by CreateSpool where the system cannot make an
// unnamed file (not Linux, or a file system without O_TMPFILE).
var errNoSpool = errors.New("blob: unnamed files are not supported here")

// CreateSpool returns a new file for key's content: an unnamed file in
// the directory of key's file (Linux O_TMPFILE), which nothing lists and
// which vanishes with its last descriptor if it is never committed, so a
// crash leaves nothing behind. Where the system cannot make one it returns
// an error: use Put then.
func (d *Dir) CreateSpool(key string) (*Spool, error) {
	path, err := d.path(key, false)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob: spool %s: %w", key, err)
	}
	f, err := createUnnamed(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: spool %s: %w", key, err)
	}
	return &Spool{File: f, d: d, key: key}, nil
}

// Commit syncs the spool and gives it its key's name, replacing what the
// key held, as Put does, without a copy. The Info has no SHA256. The file
// stays open.
func (s *Spool) Commit(ctx context.Context) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	path, err := s.d.path(s.key, false)
	if err != nil {
		return Info{}, err
	}
	if err := s.Sync(); err != nil {
		return Info{}, fmt.Errorf("blob: commit %s: %w", s.key, err)
	}
	// A name of its own first, then the rename over the key's file:
	// linkat does not replace a file.
	tmp, err := os.CreateTemp(filepath.Dir(path), tempPrefix+"*")
	if err != nil {
		return Info{}, fmt.Errorf("blob: commit %s: %w", s.key, err)
	}
	tmp.Close()
	os.Remove(tmp.Name()) // its name only: the spool is linked there
	defer os.Remove(tmp.Name())
	if err := linkUnnamed(s.File, tmp.Name()); err != nil {
		return Info{}, fmt.Errorf("blob: commit %s: %w", s.key, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Info{}, fmt.Errorf("blob: commit %s: %w", s.key, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return Info{}, fmt.Errorf("blob: commit %s: %w", s.key, err)
	}
	return Info{Key: s.key, Size: st.Size(), ModTime: st.ModTime()}, nil
}
