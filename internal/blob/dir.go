package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// tempPrefix starts the names of Dir's files being written: they sit
// beside their key's file (so the rename into place stays on one file
// system) and are never listed. (The name predates this package: tests
// of uploads look for it.)
const tempPrefix = ".upload-"

// Dir is a Store in a directory of the local file system: key "a/b/c" is
// the file root/a/b/c. Put writes a temporary file in the key's directory,
// syncs it and renames it into place.
type Dir struct {
	root string
}

var _ Store = (*Dir)(nil)

// NewDir returns the Store in directory root, creating it (mode 0700) if
// needed.
func NewDir(root string) (*Dir, error) {
	if root == "" {
		return nil, errors.New("blob: directory required")
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return &Dir{root: root}, nil
}

// Root returns the directory.
func (d *Dir) Root() string { return d.root }

func (d *Dir) path(key string, prefix bool) (string, error) {
	check := CheckKey
	if prefix {
		check = CheckPrefix
	}
	if err := check(key); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

// Put implements Store.
func (d *Dir) Put(ctx context.Context, key string, r io.Reader, limit int64, check func(Info) error) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	path, err := d.path(key, false)
	if err != nil {
		return Info{}, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Info{}, fmt.Errorf("blob: put %s: %w", key, err)
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return Info{}, fmt.Errorf("blob: put %s: %w", key, err)
	}
	defer os.Remove(tmp.Name()) // fails once renamed: nothing to remove then
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, max(limit, 0)+1))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Info{}, fmt.Errorf("blob: put %s: %w", key, err)
	}
	if n > limit {
		return Info{}, fmt.Errorf("%w: %s: more than %d bytes", ErrTooLarge, key, limit)
	}
	info := Info{Key: key, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	if check != nil {
		if err := check(info); err != nil {
			return Info{}, err
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Info{}, fmt.Errorf("blob: put %s: %w", key, err)
	}
	if st, err := os.Stat(path); err == nil {
		info.ModTime = st.ModTime()
	}
	return info, nil
}

// Open implements Store.
func (d *Dir) Open(ctx context.Context, key string) (Reader, Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, Info{}, err
	}
	path, err := d.path(key, false)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Info{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, Info{}, fmt.Errorf("blob: open %s: %w", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, fmt.Errorf("blob: open %s: %w", key, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, Info{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return f, Info{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List implements Store.
func (d *Dir) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	base, err := d.path(prefix, true)
	if err != nil {
		return nil, err
	}
	var out []Info
	err = filepath.WalkDir(base, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile (or never there)
			}
			return err
		}
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), tempPrefix) {
			return nil
		}
		st, err := e.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		rel, err := filepath.Rel(d.root, path)
		if err != nil {
			return err
		}
		out = append(out, Info{Key: filepath.ToSlash(rel), Size: st.Size(), ModTime: st.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blob: list %s: %w", prefix, err)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Key < out[k].Key })
	return out, nil
}

// Delete implements Store.
func (d *Dir) Delete(ctx context.Context, prefix string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path, err := d.path(prefix, true)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("blob: delete %s: %w", prefix, err)
	}
	return nil
}
