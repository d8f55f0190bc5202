package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestInterruptedRunReported: the agent (the real `switchboard host`, a
// child process) is killed with SIGKILL while its action runs; the action
// wrote partial metrics and output, and started a child of its own. The
// action's process and its child die with the agent (its action guard,
// TestActionGroupDiesWithAgent; the parent-death signal), and the
// restarted agent reports the run within 5 s — not after the hub's
// 60 s lost grace period: the job shows the run lost, with the metrics
// and the output tail.
// A stream's process (kind exec) dies with the agent too.
func TestInterruptedRunReported(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal and /proc are Linux's")
	}
	dir, state := t.TempDir(), t.TempDir()
	hub := startMain(t, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn", "--job-lost-grace", "60s")
	var base string
	wait.Within(t, restartWait, "the hub ready", func() bool {
		select {
		case <-hub.exited:
			t.Fatalf("switchboard serve exited: %v", hub.cmd.ProcessState)
		default:
		}
		base, _ = datadir.ReadPublicURL(dir)
		if base == "" {
			return false
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	agentTok := mustRun(t, "token", "--data-dir", dir, "--prefix", "agent", "--agent", "c1", "--scopes", "agent", "--labels", "role=client", "--ttl", "1h")
	user := strings.TrimSpace(mustRun(t, "token", "--data-dir", dir, "--scopes", "jobs:write", "--sub", "alice", "--ttl", "1h"))
	// The download: partial metrics, a line of output, then a child that
	// goes on (sleep stands for the transfer) while the shell waits.
	cfg := writeFile(t, "host.yaml", `url: `+base+`
token_file: `+writeFile(t, "agent.jwt", agentTok)+`
agent:
  id: c1
  labels: [role=client]
  state_dir: `+state+`
  actions:
    - name: download
      timeout: 5m
      command: [/bin/sh, -c, 'printf "{{\"bytes_read\": {{\"server-a\": 20971520}}}}" > "$SWITCHBOARD_RESULT"; echo "read 20 MiB"; /bin/sleep 30 & echo "leader=$$ child=$!"; wait']
      env: {PATH: /usr/bin:/bin}
streams:
  - {name: proc, kind: exec, topic: lab/proc, command: [/bin/sleep, "300"]}
`)
	host := startMain(t, "host", "--config", cfg)

	api := func(method, path string, form url.Values) (int, string, http.Header) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+path, body)
		req.Header.Set("Authorization", "Bearer "+user)
		req.Header.Set("Accept", "application/json")
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			return 0, err.Error(), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	type jobDoc struct {
		Phase   string
		JobInfo struct {
			Runs []struct {
				Agent, State, Error string
				StdoutTail          string
				Metrics             json.RawMessage
			}
		}
	}
	job := func(id string) jobDoc {
		_, b, _ := api("GET", "/api/v1/jobs/"+id, nil)
		var d jobDoc
		json.Unmarshal([]byte(b), &d)
		return d
	}
	wait.Within(t, restartWait, "the agent connected", func() bool {
		select {
		case <-host.exited:
			t.Fatalf("switchboard host exited: %v", host.cmd.ProcessState)
		default:
		}
		_, b, _ := api("GET", "/api/v1/agents", nil)
		return strings.Contains(b, `"id":"c1","connected":true`)
	})
	status, body, h := api("POST", "/api/v1/jobs", url.Values{"ACTION": {"download"}, "TARGETS": {"c1"}, "PHASE": {"RUN"}})
	if status != http.StatusSeeOther {
		t.Fatalf("create: %d %s", status, body)
	}
	id := filepath.Base(h.Get("Location"))
	// The agent's checkpoint of the output names the action's processes.
	var leader, child int
	wait.Within(t, restartWait, "the run's output checkpointed", func() bool {
		b, _ := os.ReadFile(filepath.Join(state, "runs", id, "stdout.tail"))
		for _, f := range strings.Fields(string(b)) {
			if v, ok := strings.CutPrefix(f, "leader="); ok {
				leader, _ = strconv.Atoi(v)
			}
			if v, ok := strings.CutPrefix(f, "child="); ok {
				child, _ = strconv.Atoi(v)
			}
		}
		return leader > 0 && child > 0
	})
	var stream int
	wait.Within(t, restartWait, "the stream's process started", func() bool {
		stream = childProcess(host.cmd.Process.Pid, "/bin/sleep\x00300\x00")
		return stream > 0
	})
	if d := job(id); d.Phase != "EXECUTING" || len(d.JobInfo.Runs) != 1 || d.JobInfo.Runs[0].State != "running" {
		t.Fatalf("job before the kill: %+v", d)
	}

	host.cmd.Process.Signal(syscall.SIGKILL)
	<-host.exited
	wait.Within(t, 5*time.Second, "the action's process killed with its agent", func() bool { return processGone(leader) })
	wait.Within(t, 5*time.Second, "the stream's process killed with its agent", func() bool { return processGone(stream) })

	restarted := time.Now()
	startMain(t, "host", "--config", cfg)
	var d jobDoc
	wait.Within(t, 5*time.Second, "the restarted agent to report the run", func() bool {
		d = job(id)
		return len(d.JobInfo.Runs) == 1 && d.JobInfo.Runs[0].State == "lost"
	})
	t.Logf("interrupted run reported %s after the restart", time.Since(restarted).Round(time.Millisecond))
	r := d.JobInfo.Runs[0]
	if string(r.Metrics) != `{"bytes_read":{"server-a":20971520}}` || !strings.Contains(r.StdoutTail, "read 20 MiB") ||
		!strings.Contains(r.Error, "interrupted") {
		t.Fatalf("interrupted run: %+v", r)
	}
	wait.Within(t, 5*time.Second, "the action's process group gone", func() bool { return processGone(child) && groupGone(leader) })
	wait.Within(t, 5*time.Second, "the job ended", func() bool { return job(id).Phase == "ERROR" })
}

// procState returns the state letter and process group of pid from
// /proc/<pid>/stat, ok false if it is gone.
func procState(pid int) (state byte, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pgrp, _ = strconv.Atoi(f[2])
	return f[0][0], pgrp, true
}

// childProcess returns the pid of a child of parent whose command line is
// cmdline (NUL-terminated arguments), or 0.
func childProcess(parent int, cmdline string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		if c, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); string(c) == cmdline {
			return pid
		}
	}
	return 0
}

// processGone reports whether pid has exited (a zombie counts as gone).
func processGone(pid int) bool {
	st, _, ok := procState(pid)
	return !ok || st == 'Z' || st == 'X'
}

// groupGone reports whether process group pgid has no live member left.
func groupGone(pgid int) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, pgrp, ok := procState(pid); ok && pgrp == pgid && st != 'Z' && st != 'X' {
			return false
		}
	}
	return true
}
