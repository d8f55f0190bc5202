package agent

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// containProcess makes an action's process the leader of a process group
// of its own that gets SIGKILL when the agent dies (parent-death signal).
// Only the leader gets that signal: processes it starts survive the agent
// until the agent starts again and kills the group recorded in the run's
// state (killLeftoverGroup).
func containProcess(attr *syscall.SysProcAttr) {
	attr.Setpgid = true
	dieWithAgent(attr)
}

// dieWithAgent has the process get SIGKILL when the agent dies (start it
// with startContained).
func dieWithAgent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }

// startContained starts cmd on a thread locked to this goroutine: Linux
// sends the parent-death signal when the thread that forked the child
// ends, and the Go runtime ends a thread only when a goroutine exits while
// locked to it, never one returned to the pool by UnlockOSThread.
func startContained(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}

// procIdentity returns what identifies a process across pid reuse: its
// start time in clock ticks after boot (/proc/<pid>/stat field 22), and
// the boot's id.
func procIdentity(pid int) (start uint64, boot string, err error) {
	st, err := readProcStat(pid)
	if err != nil {
		return 0, "", err
	}
	return st.start, bootID(), nil
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// procStat is what the agent reads of /proc/<pid>/stat.
type procStat struct {
	pgrp   int
	start  uint64
	zombie bool
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// "pid (comm) state ppid pgrp …": comm may hold spaces and ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 { // f[n-3] is field n
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	pgrp, err1 := strconv.Atoi(f[2])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unreadable", pid)
	}
	return procStat{pgrp: pgrp, start: start, zombie: f[0][0] == 'Z' || f[0][0] == 'X'}, nil
}

// groupMembers returns the live (not zombie) processes of process group
// pgid, with their stat.
func groupMembers(pgid int) map[int]procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := map[int]procStat{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		st, err := readProcStat(pid)
		if err == nil && st.pgrp == pgid && !st.zombie {
			out[pid] = st
		}
	}
	return out
}

// environHas reports whether process pid's initial environment holds kv.
func environHas(pid int, kv string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for _, v := range bytes.Split(b, []byte{0}) {
		if string(v) == kv {
			return true
		}
	}
	return false
}

// killLeftoverGroup kills what is left of an interrupted run's process
// group, if it is still that run's: the same boot, every member started no
// earlier than the recorded leader, and either the leader itself (same pid
// and start time) or a member whose environment names the run's
// $SWITCHBOARD_RESULT. A process group id is not reused while any process
// is in the group, so a group that passes is the run's. It returns what it
// did, for the log and the run's error.
func killLeftoverGroup(rec *runRecord, resultFile string) string {
	if rec.PGID <= 1 {
		return "no process group recorded"
	}
	if rec.BootID != "" && rec.BootID != bootID() {
		return "the machine restarted since: no process of the run is left"
	}
	members := groupMembers(rec.PGID)
	if len(members) == 0 {
		return "no process of the run was left"
	}
	ours := false
	for pid, st := range members {
		if st.start < rec.ProcStart {
			return fmt.Sprintf("process group %d is not the run's (process %d is older than the run): left alone", rec.PGID, pid)
		}
		if pid == rec.PGID && st.start == rec.ProcStart || environHas(pid, "SWITCHBOARD_RESULT="+resultFile) {
			ours = true
		}
	}
	if !ours {
		return fmt.Sprintf("process group %d is not recognisably the run's: left alone", rec.PGID)
	}
	if err := syscall.Kill(-rec.PGID, syscall.SIGKILL); err != nil {
		return fmt.Sprintf("killing the %s left in group %d: %v", processes(len(members)), rec.PGID, err)
	}
	return fmt.Sprintf("%s left in group %d killed", processes(len(members)), rec.PGID)
}

func processes(n int) string {
	if n == 1 {
		return "1 process"
	}
	return strconv.Itoa(n) + " processes"
}
