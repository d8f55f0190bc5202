package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-hub/switchboard/internal/datadir"
)

// Bounds of the child server's life cycle.
const (
	// StartTimeout bounds the wait for a child server to listen.
	StartTimeout = 15 * time.Second
	// StopTimeout is how long a child server has to exit after SIGTERM
	// before it is killed.
	StopTimeout = 10 * time.Second
	// pollInterval is how often StartServer looks for the server's files.
	pollInterval = 5 * time.Millisecond
)

// ChildServer is a `switchboard serve` child process on a loopback port with
// its own temporary data directory.
type ChildServer struct {
	// URL is the server's public base URL (the token audience).
	URL string
	// Secret is the server's generated token signing secret.
	Secret []byte
	// PID is the child's process id.
	PID int
	// Dir is the temporary data directory, removed by Stop.
	Dir string

	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has been waited for
	waitErr  error         // set before exited is closed
	stopOnce sync.Once
	stopErr  error
}

// loadGeneratorArgs lift the limits meant for one client among many: a
// load generator is one address, often one token, that opens as many
// connections as it measures. The descriptor reserve stays small so that
// `bench conns` can use nearly all descriptors; the node-wide bounds (queue
// budget, descriptor limit) stay as configured.
var loadGeneratorArgs = []string{"--max-conns-per-token", "10000000", "--max-conns-per-subject", "10000000",
	"--max-requests-per-address", "10000000", "--fd-reserve", "64", "--job-max-waits-per-subject", "1000000",
	"--max-publish-per-token", "10000000", "--max-publish-per-address", "10000000"}

// StartServer starts `binary serve` listening on 127.0.0.1 with a fresh
// temporary data directory and extraArgs appended to the command line, and
// waits (polling, bounded by StartTimeout and ctx) until it has recorded its
// public URL. The child's output goes to stderr. Environment variables named
// SWITCHBOARD_* are not passed on, so that they cannot change the flags the
// bench relies on. The caller must call Stop.
func StartServer(ctx context.Context, binary string, extraArgs []string, stderr io.Writer) (*ChildServer, error) {
	dir, err := os.MkdirTemp("", "switchboard-bench-*")
	if err != nil {
		return nil, fmt.Errorf("bench: start server: %w", err)
	}
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn"}, loadGeneratorArgs...)
	args = append(args, extraArgs...)
	cmd := exec.Command(binary, args...)
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// If the bench dies without stopping the server, the kernel terminates
	// it. (Pdeathsig follows the creating OS thread; the Go runtime does
	// not end threads of goroutines that are not locked to them.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start server: %w", err)
	}
	s := &ChildServer{PID: cmd.Process.Pid, Dir: dir, cmd: cmd, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	deadline := time.NewTimer(StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		u, _ := datadir.ReadPublicURL(dir)
		if u != "" {
			secret, err := datadir.LoadSecret(dir)
			if err != nil {
				s.Stop()
				return nil, fmt.Errorf("bench: server listens at %s but its secret is unreadable: %w", u, err)
			}
			s.URL, s.Secret = u, secret
			return s, nil
		}
		select {
		case <-tick.C:
		case <-s.exited:
			s.Stop()
			return nil, fmt.Errorf("bench: server exited before listening: %v", s.waitErr)
		case <-deadline.C:
			s.Stop()
			return nil, fmt.Errorf("bench: server did not listen within %v", StartTimeout)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		}
	}
}

// Stop sends SIGTERM, waits for the server to exit (killing it after
// StopTimeout) and removes its data directory. It is safe to call more than
// once; later calls return the first result.
func (s *ChildServer) Stop() error {
	s.stopOnce.Do(func() {
		defer os.RemoveAll(s.Dir)
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(StopTimeout)
			defer t.Stop()
			select {
			case <-s.exited:
			case <-t.C:
				_ = s.cmd.Process.Kill()
				<-s.exited
				s.stopErr = fmt.Errorf("bench: server did not stop within %v after SIGTERM; killed", StopTimeout)
				return
			}
		}
		var ee *exec.ExitError
		if s.waitErr != nil && !errors.As(s.waitErr, &ee) {
			s.stopErr = fmt.Errorf("bench: server: %w", s.waitErr)
		} else if s.waitErr != nil {
			s.stopErr = fmt.Errorf("bench: server exited: %w", s.waitErr)
		}
	})
	return s.stopErr
}

// clockTicks is the kernel's USER_HZ, the unit of CPU times in /proc.
const clockTicks = 100

// ProcCPU returns the user plus system CPU time process pid has used, from
// /proc/PID/stat (Linux only).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// ProcPeakRSS returns the peak resident set size (VmHWM) of process pid in
// bytes, from /proc/PID/status (Linux only).
func ProcPeakRSS(pid int) (int64, error) { return procStatusKB(pid, "VmHWM:") }

// ProcRSS returns the current resident set size of process pid (VmRSS).
func ProcRSS(pid int) (int64, error) { return procStatusKB(pid, "VmRSS:") }

// procStatusKB reads a "kB" field of /proc/PID/status, in bytes.
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, field)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			break
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("bench: /proc/%d/status: no %s", pid, field)
}

// cpuSpan measures the CPU time a process uses from its start.
type cpuSpan struct {
	pid   int // 0: no process to measure
	start time.Duration
	err   error
}

// startCPUSpan starts measuring the CPU time of process pid (0: none).
func startCPUSpan(pid int) cpuSpan {
	s := cpuSpan{pid: pid}
	if pid > 0 {
		s.start, s.err = ProcCPU(pid)
	}
	return s
}

// seconds returns the CPU seconds the process has used since the start,
// nil when there is no process or its CPU time could not be read.
func (s cpuSpan) seconds() *float64 {
	if s.pid <= 0 || s.err != nil {
		return nil
	}
	end, err := ProcCPU(s.pid)
	if err != nil {
		return nil
	}
	v := (end - s.start).Seconds()
	return &v
}
