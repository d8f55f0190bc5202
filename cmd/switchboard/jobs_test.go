package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestJobsSurviveKill9: the hub is killed with SIGKILL while an agent
// (the real `switchboard host`, a child process) runs a job; the run ends
// while the hub is down. After the restart every job is in a consistent
// phase, and the agent's stored result, with its metrics and output file,
// is collected: the job completes.
func TestJobsSurviveKill9(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	// The first start picks a free port; the restart takes the same one
	// (the agent's URL and the tokens' audience name it).
	var base string
	startHub := func() *child {
		listen := "127.0.0.1:0"
		if base != "" {
			listen = strings.TrimPrefix(base, "http://")
		}
		os.Remove(filepath.Join(dir, datadir.PublicURLFile))
		c := startMain(t, "serve", "--listen", listen, "--data-dir", dir, "--log-level", "warn", "--job-lost-grace", "60s")
		wait.Within(t, restartWait, "the hub ready", func() bool {
			select {
			case <-c.exited:
				t.Fatalf("switchboard serve exited: %v", c.cmd.ProcessState)
			default:
			}
			u, err := datadir.ReadPublicURL(dir)
			if err != nil || u == "" {
				return false
			}
			base = u
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		return c
	}
	hub := startHub()
	ctx := context.Background()
	agentTok := mustRun(t, "token", "--data-dir", dir, "--prefix", "agent", "--agent", "c1", "--scopes", "agent", "--labels", "role=client", "--ttl", "1h")
	user := strings.TrimSpace(mustRun(t, "token", "--data-dir", dir, "--scopes", "jobs:write", "--sub", "alice", "--ttl", "1h"))
	gate := filepath.Join(t.TempDir(), "gate")
	cfg := `url: ` + base + `
token_file: ` + writeFile(t, "agent.jwt", agentTok) + `
agent:
  id: c1
  labels: [role=client]
  state_dir: ` + state + `
  actions:
    - name: gated
      timeout: 5m
      command: [/bin/sh, -c, 'while [ ! -e "$GATE" ]; do sleep 0.05; done; echo done; printf "{{\"bytes_read\": {{\"server-a\": 42}}}}" > "$SWITCHBOARD_RESULT"; echo report > "$SWITCHBOARD_OUTPUT/report.txt"']
      env: {GATE: ` + gate + `, PATH: /usr/bin:/bin}
`
	host := startMain(t, "host", "--config", writeFile(t, "host.yaml", cfg))

	api := func(method, path string, form url.Values) (int, string, http.Header) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+path, body)
		req.Header.Set("Authorization", "Bearer "+user)
		req.Header.Set("Accept", "application/json") // the jobs API answers UWS XML by default
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
				Agent, State string
				Metrics      json.RawMessage
			}
		}
		Results []struct{ ID string }
	}
	job := func(id string) jobDoc {
		_, b, _ := api("GET", "/api/v1/jobs/"+id, nil)
		var d jobDoc
		json.Unmarshal([]byte(b), &d)
		return d
	}
	create := func(v url.Values) string {
		status, body, h := api("POST", "/api/v1/jobs", v)
		if status != http.StatusSeeOther {
			t.Fatalf("create: %d %s", status, body)
		}
		return filepath.Base(h.Get("Location"))
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
	pending := create(url.Values{"action": {"gated"}, "targets": {"role=client"}})
	running := create(url.Values{"action": {"gated"}, "targets": {"role=client"}, "PHASE": {"RUN"}})
	wait.Within(t, restartWait, "the run started", func() bool {
		d := job(running)
		return d.Phase == "EXECUTING" && len(d.JobInfo.Runs) == 1 && d.JobInfo.Runs[0].State == "running"
	})

	hub.cmd.Process.Signal(syscall.SIGKILL)
	<-hub.exited
	if err := os.WriteFile(gate, nil, 0o600); err != nil { // the run ends while the hub is down
		t.Fatal(err)
	}
	startHub()
	if d := job(pending); d.Phase != "PENDING" {
		t.Fatalf("pending job after the restart: %s", d.Phase)
	}
	var d jobDoc
	wait.Within(t, restartWait, "the job completed after the restart", func() bool {
		d = job(running)
		return d.Phase == "COMPLETED"
	})
	if len(d.JobInfo.Runs) != 1 || !strings.Contains(string(d.JobInfo.Runs[0].Metrics), `"server-a":42`) ||
		len(d.Results) != 2 || d.Results[1].ID != "c1/report.txt" {
		t.Fatalf("completed job: %+v", d)
	}
	if status, body, _ := api("GET", "/api/v1/jobs/"+running+"/results/c1/report.txt", nil); status != 200 || body != "report\n" {
		t.Fatalf("report: %d %q", status, body)
	}
	// The agent forgot the result once the hub acknowledged it.
	wait.Within(t, restartWait, "the agent's state directory emptied", func() bool {
		entries, _ := os.ReadDir(filepath.Join(state, "results"))
		return len(entries) == 0
	})

	// A run the hub saw through keeps its whole output: the result
	// logs/c1.txt, read after the job (the gate is open: it runs at once).
	again := create(url.Values{"action": {"gated"}, "targets": {"role=client"}, "PHASE": {"RUN"}})
	wait.Within(t, restartWait, "the second job completed", func() bool { return job(again).Phase == "COMPLETED" })
	if status, body, _ := api("GET", "/api/v1/jobs/"+again+"/results/logs/c1.txt", nil); status != 200 || body != "[stdout] done\n" {
		t.Fatalf("stored log: %d %q", status, body)
	}
}

// restartWait bounds the waits of the jobs end-to-end test: process
// restarts and agent reconnects with backoff take seconds.
const restartWait = 30 * time.Second
