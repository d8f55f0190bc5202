package main

import (
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

// TestActionGroupDiesWithAgent: a job action (the real `switchboard host`,
// a child process) starts a process of its own in the background and
// waits for it; the agent is killed with SIGKILL and not started again.
// The whole process group of the action — the action and its child, which
// the parent-death signal does not reach — is gone within 5 s, through
// the action guard (internal/agent/guard.go).
func TestActionGroupDiesWithAgent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the test reads processes from /proc (Linux)")
	}
	dir, state := t.TempDir(), t.TempDir()
	startMain(t, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn")
	var base string
	wait.Within(t, restartWait, "the hub ready", func() bool {
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
	agentTok := mustRun(t, "token", "--data-dir", dir, "--prefix", "agent", "--agent", "c1", "--scopes", "agent", "--ttl", "1h")
	user := strings.TrimSpace(mustRun(t, "token", "--data-dir", dir, "--scopes", "jobs:write", "--sub", "alice", "--ttl", "1h"))
	cfg := writeFile(t, "host.yaml", `url: `+base+`
token_file: `+writeFile(t, "agent.jwt", agentTok)+`
agent:
  id: c1
  state_dir: `+state+`
  actions:
    - name: download
      timeout: 5m
      command: [/bin/sh, -c, '/bin/sleep 300 & echo "leader=$$ child=$!"; wait']
      env: {PATH: /usr/bin:/bin}
`)
	host := startMain(t, "host", "--config", cfg)
	api := func(method, path string, form url.Values) (int, string, http.Header) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Authorization", "Bearer "+user)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			return 0, err.Error(), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	wait.Within(t, restartWait, "the agent connected", func() bool {
		_, b, _ := api("GET", "/api/v1/agents", url.Values{})
		return strings.Contains(b, `"id":"c1","connected":true`)
	})
	status, body, h := api("POST", "/api/v1/jobs", url.Values{"ACTION": {"download"}, "TARGETS": {"c1"}, "PHASE": {"RUN"}})
	if status != http.StatusSeeOther {
		t.Fatalf("create: %d %s", status, body)
	}
	id := filepath.Base(h.Get("Location"))
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
	t.Cleanup(func() { syscall.Kill(-leader, syscall.SIGKILL) }) // what a failed test leaves behind
	if _, pgrp, ok := procState(child); !ok || pgrp != leader || groupGone(leader) {
		t.Fatalf("the action's child %d is not running in the group %d", child, leader)
	}

	host.cmd.Process.Signal(syscall.SIGKILL)
	<-host.exited
	killed := time.Now()
	wait.Within(t, 5*time.Second, "no process left in the action's group", func() bool { return groupGone(leader) && processGone(child) })
	t.Logf("the action's group was gone %s after the agent's kill", time.Since(killed).Round(time.Millisecond))
}
