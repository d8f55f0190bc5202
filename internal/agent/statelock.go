package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// stateLockFile is the file in the state directory that an agent holds an
// exclusive flock(2) on while it reads the directory at New and while it
// runs: a second agent on the same directory would take the first one's
// running runs for interrupted ones, kill their process groups and report
// them. The kernel drops the lock when its holder exits, however it exits.
// The file holds the holder's pid.
const stateLockFile = "lock"

// lockStateDir takes the state directory's lock, or fails at once naming
// the process that holds it. Errors name the directory, not the setting:
// callers prefix them.
func lockStateDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, stateLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
					holder = "process " + strconv.Itoa(pid)
				}
			}
			return nil, fmt.Errorf("%s is in use by %s (another switchboard host?); stop it or give this one another state_dir", dir, holder)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil // closing the descriptor drops the lock
}

// lockStateDir takes the lock of the jobs' state directory for as long as
// the agent runs; release is a no-op without one.
func (a *Agent) lockStateDir() (release func(), err error) {
	if a.jobs == nil || a.jobs.store == nil {
		return func() {}, nil
	}
	release, err = lockStateDir(a.jobs.store.dir)
	if err != nil {
		return nil, fmt.Errorf("agent: state_dir: %w", err)
	}
	return release, nil
}
