package agent

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// The test binary is the action guard of the tests' agents (jobOpts).
func TestMain(m *testing.M) {
	GuardMain()
	os.Exit(m.Run())
}

// startGuarded starts argv through the guard (this test binary), with its
// output to out.
func startGuarded(t *testing.T, out *os.File, argv ...string) (*actionProcess, error) {
	t.Helper()
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Env: []string{"PATH=/usr/bin:/bin"}, Stdout: out, Stderr: out}
	return startAction(cmd, os.Args[0])
}

// The guard reports the action's pid and its end as the action's own
// wait status would: an exit status, a signal, a program that cannot start.
func TestGuardReportsTheActionsEnd(t *testing.T) {
	p, err := startGuarded(t, nil, "/bin/sh", "-c", "exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if ws, ok, err := p.wait(); !ok || err != nil || ws.Signaled() || ws.ExitStatus() != 3 {
		t.Fatalf("exit 3: status %v ok %v err %v", ws, ok, err)
	}
	p, err = startGuarded(t, nil, "/bin/sh", "-c", "kill -TERM $$")
	if err != nil {
		t.Fatal(err)
	}
	if ws, ok, err := p.wait(); !ok || err != nil || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("killed: status %v ok %v err %v", ws, ok, err)
	}
	_, err = startGuarded(t, nil, "/nonexistent/program")
	direct := exec.Command("/nonexistent/program").Start()
	if err == nil || direct == nil || err.Error() != direct.Error() {
		t.Fatalf("start error through the guard %v, want %v", err, direct)
	}
}
