package agent

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// When the agent's end of the lifeline closes (as at its death), the
// guard kills the action's whole process group, including a child the
// action started, which the parent-death signal would not reach.
func TestGuardKillsTheGroupWhenTheAgentGoes(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := startGuarded(t, w, "/bin/sh", "-c", "sleep 300 & echo $!; wait")
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { signalGroup(p.pgid, syscall.SIGKILL) })
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	if strings.TrimSpace(string(buf[:n])) == "" {
		t.Fatal("the action did not say its child's pid")
	}
	if len(groupMembers(p.pgid)) != 2 {
		t.Fatalf("group %d: %d members, want the shell and its sleep", p.pgid, len(groupMembers(p.pgid)))
	}
	p.lifeline.Close()
	wait.Within(t, 5*time.Second, "the action's group gone", func() bool { return len(groupMembers(p.pgid)) == 0 })
}
