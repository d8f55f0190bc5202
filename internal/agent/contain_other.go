//go:build !linux

package agent

import (
	"errors"
	"os/exec"
	"syscall"
)

// containProcess makes an action's process the leader of a process group
// of its own. Without Linux's parent-death signal the group outlives a
// crashed agent.
func containProcess(attr *syscall.SysProcAttr) { attr.Setpgid = true }

// dieWithAgent does nothing: there is no parent-death signal here.
func dieWithAgent(*syscall.SysProcAttr) {}

func startContained(cmd *exec.Cmd) error { return cmd.Start() }

func procIdentity(int) (uint64, string, error) {
	return 0, "", errors.New("process start times are read from /proc (Linux only)")
}

// killLeftoverGroup cannot tell a group that is still the run's from a
// reused id without /proc: it leaves it alone.
func killLeftoverGroup(rec *runRecord, _ string) string {
	return "process groups left by a crash are not checked on this system: group left alone"
}
