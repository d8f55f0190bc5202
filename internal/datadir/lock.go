package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the file in the data directory that `switchboard serve` holds
// an exclusive lock on while it runs. It contains the holder's pid.
const LockFile = "lock"

// Lock is an exclusive hold on a data directory. Two processes on one data
// directory would silently share the SQLite file and the node id: a deny
// recorded by one would not be enforced by the other, and each would rewrite
// the recorded public URL.
type Lock struct {
	f *os.File
}

// ErrLocked is wrapped by Acquire's error when another process holds the
// directory.
var ErrLocked = errors.New("datadir: data directory in use")

// Acquire takes the exclusive lock on dir (creating dir if needed) or fails
// at once with an error naming the holder's pid. The lock is an flock(2) on
// dir/lock, so the kernel drops it when the holder exits, however it exits:
// a stale lock file never blocks a restart.
func Acquire(dir string) (*Lock, error) {
	if err := Ensure(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("datadir: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
					holder = "process " + strconv.Itoa(pid)
				}
			}
			return nil, fmt.Errorf("%w: %s holds %s; stop it or use another --data-dir", ErrLocked, holder, path)
		}
		return nil, fmt.Errorf("datadir: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("datadir: write lock file: %w", err)
	}
	return &Lock{f: f}, nil
}

// Release gives the directory up. The lock file stays (removing it would
// race with a process that just opened it); its pid is cleared.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close()
	l.f = nil
	return err
}
