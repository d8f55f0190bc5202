package agent

// The action guard: a small process between the agent and each job action
// that makes an action's whole process group die with the agent.
//
// The parent-death signal (containProcess) reaches only the action's own
// process; what the action starts itself (a download in the background, a
// pipeline) used to outlive a kill -9'ed agent until the agent started
// again and killed the group it had recorded (killLeftoverGroup). With
// Options.ActionGuard set, the agent starts each action through the guard
// (the switchboard binary again, in GuardMain): the guard starts the action
// in a process group of its own and holds the read end of a pipe, the
// lifeline, whose only write end the agent holds. When the agent dies, for
// whatever reason, the kernel closes that end, the guard reads EOF and
// kills the action's whole group at once, then exits. The start-up sweep of
// recorded groups stays, for a guard that was killed too.
//
// Between agent and guard (file descriptors of the guard):
//   - 3, the lifeline: read only; EOF means the agent is gone.
//   - 4, the report: the guard writes "pid N\n" once the action started
//     (or "error TEXT\n" if it could not start it), then "status W\n" with
//     the action's raw wait status (syscall.WaitStatus) when it ended.
//
// The guard is not in the action's group, so the agent's signals to the
// group (SIGTERM on abort or timeout, SIGKILL after the grace) reach the
// action and not the guard; the guard ignores SIGINT, SIGTERM and SIGHUP
// sent to it (a terminal's ^C or a service manager's stop reach the agent,
// which stops its runs in order).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// guardArg is the first argument that makes the program an action guard
// (GuardMain); the action's argv follows it.
const guardArg = "__switchboard-action-guard"

// guardKillWait bounds how long a guard whose agent died keeps killing the
// action's group (a process that forks while the group is killed may
// leave a new member behind; it is killed in the next round).
const guardKillWait = 5 * time.Second

// GuardMain runs the program as an action guard, and exits, when it was
// started as one (by an agent whose Options.ActionGuard names it);
// otherwise it returns at once. Call it first in main, and in the TestMain
// of tests whose test binary serves as the guard.
func GuardMain() {
	if len(os.Args) < 3 || os.Args[1] != guardArg {
		return
	}
	os.Exit(runGuard(os.Args[2:], os.NewFile(3, "lifeline"), os.NewFile(4, "report")))
}

// runGuard starts argv in a process group of its own, reports it on
// report, and waits for it or for EOF on lifeline, whichever comes first.
func runGuard(argv []string, lifeline, report *os.File) int {
	if lifeline == nil || report == nil {
		fmt.Fprintln(os.Stderr, "switchboard: the action guard is started by the agent only")
		return 2
	}
	stops := make(chan os.Signal, 1)
	signal.Notify(stops, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP) // caught and ignored; reset for the action by exec
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Stdin: nil, Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{}}
	containProcess(cmd.SysProcAttr) // its own group, SIGKILL if the guard dies
	if err := startContained(cmd); err != nil {
		fmt.Fprintf(report, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return 127
	}
	pgid := cmd.Process.Pid
	fmt.Fprintf(report, "pid %d\n", pgid)
	go func() {
		io.Copy(io.Discard, lifeline) // the agent never writes: this returns when it is gone
		killGroupUntilEmpty(pgid)
		os.Exit(1)
	}()
	err := cmd.Wait()
	var ws syscall.WaitStatus
	if cmd.ProcessState != nil {
		ws, _ = cmd.ProcessState.Sys().(syscall.WaitStatus)
	} else {
		fmt.Fprintf(report, "error wait: %s\n", strings.ReplaceAll(fmt.Sprint(err), "\n", " "))
		return 1
	}
	fmt.Fprintf(report, "status %d\n", uint32(ws))
	return 0
}

// killGroupUntilEmpty sends SIGKILL to process group pgid until no
// process is left in it, for at most guardKillWait.
func killGroupUntilEmpty(pgid int) {
	deadline := time.Now().Add(guardKillWait)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		signalGroup(pgid, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
}

// actionProcess is a started action: its process group, and how to wait
// for its end.
type actionProcess struct {
	pgid int
	// lifeline is the agent's end of the guard's lifeline (nil without a
	// guard); closing it is what the agent's death does. Closed by wait.
	lifeline *os.File
	// wait waits for the action's end and returns its wait status; ok is
	// false when none is known (then err says why).
	wait func() (ws syscall.WaitStatus, ok bool, err error)
}

// startAction starts cmd, contained: through the guard when guard names
// one (see the file's comment), else directly with the parent-death
// signal. cmd's Path, Args, Dir, Env, Stdout and Stderr are used.
func startAction(cmd *exec.Cmd, guard string) (*actionProcess, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if guard == "" {
		containProcess(cmd.SysProcAttr)
		if err := startContained(cmd); err != nil {
			return nil, err
		}
		return &actionProcess{pgid: cmd.Process.Pid, wait: func() (syscall.WaitStatus, bool, error) {
			err := cmd.Wait()
			if cmd.ProcessState == nil {
				return 0, false, err
			}
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			return ws, true, err
		}}, nil
	}
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("action guard: %w", err)
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		lifeR.Close()
		lifeW.Close()
		return nil, fmt.Errorf("action guard: %w", err)
	}
	g := &exec.Cmd{Path: guard, Args: append([]string{guard, guardArg}, cmd.Args...), Dir: cmd.Dir, Env: cmd.Env,
		Stdout: cmd.Stdout, Stderr: cmd.Stderr, ExtraFiles: []*os.File{lifeR, repW}}
	// The guard has no parent-death signal: it must outlive the agent to
	// kill the action's group. It is not in that group either.
	err = g.Start()
	lifeR.Close()
	repW.Close()
	if err != nil {
		lifeW.Close()
		repR.Close()
		return nil, fmt.Errorf("action guard %s: %w", guard, err)
	}
	report := bufio.NewReader(repR)
	finish := func() {
		g.Wait()
		repR.Close()
		lifeW.Close() // only now: while the agent lives, the guard sees no EOF
	}
	kind, val, rerr := readGuardLine(report)
	switch {
	case rerr != nil:
		finish()
		return nil, fmt.Errorf("action guard %s: %v (%v)", guard, rerr, g.ProcessState)
	case kind == "error":
		finish()
		return nil, errors.New(val)
	case kind != "pid":
		finish()
		return nil, fmt.Errorf("action guard %s: unexpected report %q", guard, kind)
	}
	pid, err := strconv.Atoi(val)
	if err != nil || pid <= 1 {
		finish()
		return nil, fmt.Errorf("action guard %s: bad pid %q", guard, val)
	}
	return &actionProcess{pgid: pid, lifeline: lifeW, wait: func() (syscall.WaitStatus, bool, error) {
		kind, val, rerr := readGuardLine(report)
		finish()
		switch {
		case rerr != nil:
			return 0, false, fmt.Errorf("the action guard ended without the action's status (%v)", g.ProcessState)
		case kind == "error":
			return 0, false, errors.New(val)
		case kind != "status":
			return 0, false, fmt.Errorf("the action guard reported %q, not the action's status", kind)
		}
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return 0, false, fmt.Errorf("the action guard reported a bad status %q", val)
		}
		return syscall.WaitStatus(n), true, nil
	}}, nil
}

// readGuardLine reads one "kind value" line of a guard's report.
func readGuardLine(r *bufio.Reader) (kind, val string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("the guard ended without a report")
		}
		return "", "", err
	}
	kind, val, _ = strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	return kind, val, nil
}
