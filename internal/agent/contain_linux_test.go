package agent

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestKillLeftoverGroupChecksOwnership: the group a run record names is
// killed only when it is still the run's — its leader with the recorded
// start time, or a member whose environment names the run's
// $SWITCHBOARD_RESULT — and never when a member is older than the
// recorded leader (the id was reused) or nothing identifies it.
func TestKillLeftoverGroupChecksOwnership(t *testing.T) {
	const resultFile = "/state/runs/j1/result.json"
	start := func(env ...string) (pid int, procStart uint64) {
		t.Helper()
		cmd := exec.Command("/bin/sleep", "60")
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-exited })
		ps, boot, err := procIdentity(cmd.Process.Pid)
		if err != nil || boot == "" {
			t.Fatalf("identity of %d: %v (boot %q)", cmd.Process.Pid, err, boot)
		}
		return cmd.Process.Pid, ps
	}
	alive := func(pid int) bool { st, err := readProcStat(pid); return err == nil && !st.zombie }
	boot := bootID()

	cases := []struct {
		name   string
		env    []string
		offset int64 // added to the leader's real start time in the record
		killed bool
		says   string
	}{
		{"leader with its recorded start time", nil, 0, true, "killed"},
		{"a member older than the recorded leader", nil, 1, false, "older than the run"},
		{"pid reused, nothing names the run", nil, -1, false, "not recognisably"},
		{"pid reused, a member names the run's result file", []string{"SWITCHBOARD_RESULT=" + resultFile}, -1, true, "killed"},
		{"another run's result file", []string{"SWITCHBOARD_RESULT=/state/runs/j2/result.json"}, -1, false, "not recognisably"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pid, ps := start(c.env...)
			rec := &runRecord{Job: "j1", PGID: pid, ProcStart: uint64(int64(ps) + c.offset), BootID: boot}
			got := killLeftoverGroup(rec, resultFile)
			if !strings.Contains(got, c.says) {
				t.Fatalf("killLeftoverGroup: %q, want it to say %q", got, c.says)
			}
			if c.killed {
				wait.For(t, "the group killed", func() bool { return !alive(pid) })
			} else if !alive(pid) {
				t.Fatalf("process %d of a group that is not the run's was killed", pid)
			}
		})
	}

	t.Run("another boot", func(t *testing.T) {
		pid, ps := start()
		got := killLeftoverGroup(&runRecord{Job: "j1", PGID: pid, ProcStart: ps, BootID: "another-boot"}, resultFile)
		if !strings.Contains(got, "restarted") || !alive(pid) {
			t.Fatalf("record of another boot: %q, process alive %v", got, alive(pid))
		}
	})
	t.Run("group gone", func(t *testing.T) {
		if got := killLeftoverGroup(&runRecord{Job: "j1", PGID: os.Getpid() + 1<<22, BootID: boot}, resultFile); !strings.Contains(got, "no process") {
			t.Fatalf("empty group: %q", got)
		}
	})
}
