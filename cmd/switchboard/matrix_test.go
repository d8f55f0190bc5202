package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestMatrixRealAgents: four real `switchboard host` agents (child
// processes) and three loopback HTTP file servers of known sizes. A test
// saved as a definition, whose SERVER parameter lists the three servers,
// is launched with one request: every client downloads from every server
// with curl, and the matrix result has every cell equal to the true file
// size (the servers' own counts agree), with the totals. A second run of
// the definition compares equal, cell by cell, to the first.
func TestMatrixRealAgents(t *testing.T) {
	dir := t.TempDir()
	hub := startMain(t, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn")
	var base string
	wait.Within(t, restartWait, "the hub ready", func() bool {
		select {
		case <-hub.exited:
			t.Fatalf("switchboard serve exited: %v", hub.cmd.ProcessState)
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

	// The data servers: file f{i} of sizes[i] bytes; each counts the
	// bytes it served to each agent (curl sends X-Agent).
	sizes := []int{1000, 64<<10 + 17, 1<<20 + 3}
	var mu sync.Mutex
	served := map[string]int{} // "agent server-index" → bytes
	var urls []string
	for i, size := range sizes {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != fmt.Sprintf("/f%d", i) {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(size))
			n, _ := w.Write(make([]byte, size))
			mu.Lock()
			served[fmt.Sprintf("%s %d", r.Header.Get("X-Agent"), i)] += n
			mu.Unlock()
		}))
		t.Cleanup(srv.Close)
		urls = append(urls, fmt.Sprintf("%s/f%d", srv.URL, i))
	}

	agents := []string{"c1", "c2", "c3", "c4"}
	for _, id := range agents {
		tok := mustRun(t, "token", "--data-dir", dir, "--prefix", "agent", "--agent", id, "--scopes", "agent", "--labels", "role=client", "--ttl", "1h")
		cfg := `url: ` + base + `
token_file: ` + writeFile(t, id+".jwt", tok) + `
agent:
  id: ` + id + `
  labels: [role=client]
  state_dir: ` + filepath.Join(t.TempDir(), "state") + `
  actions:
    - name: download
      timeout: 1m
      max_concurrent: 3
      params:
        - {name: server, type: string, required: true, pattern: "http://127\\.0\\.0\\.1:[0-9]+/f[0-9]"}
      command: [/bin/sh, -c, 'n=$(curl -sS -H "X-Agent: $SWITCHBOARD_AGENT" -o /dev/null -w "%{{size_download}}" "$SWITCHBOARD_PARAM_SERVER") && printf "{{\"bytes_read\": %s}}" "$n" > "$SWITCHBOARD_RESULT"']
      env: {PATH: /usr/bin:/bin}
`
		startMain(t, "host", "--config", writeFile(t, id+".yaml", cfg))
	}
	user := strings.TrimSpace(mustRun(t, "token", "--data-dir", dir, "--scopes", "jobs:write", "--sub", "alice", "--ttl", "1h"))
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	api := func(method, path, contentType, body string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+user)
		req.Header.Set("Accept", "application/json")
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	wait.Within(t, restartWait, "the four agents connected", func() bool {
		_, b, _ := api("GET", "/api/v1/agents", "", "")
		return strings.Count(b, `"connected":true`) == len(agents)
	})

	def, _ := json.Marshal(map[string]any{"action": "download", "targets": "role=client", "parameters": map[string]any{"server": urls}})
	if status, body, _ := api("PUT", "/api/v1/definitions/scale%20test", "application/json", string(def)); status != http.StatusCreated {
		t.Fatalf("PUT definition: %d %s", status, body)
	}
	run := func() string {
		t.Helper()
		status, body, h := api("POST", "/api/v1/definitions/scale%20test/jobs", "application/x-www-form-urlencoded", url.Values{"PHASE": {"RUN"}}.Encode())
		if status != http.StatusSeeOther {
			t.Fatalf("run the definition: %d %s", status, body)
		}
		id := filepath.Base(h.Get("Location"))
		wait.Within(t, restartWait, "the test completed", func() bool {
			_, b, _ := api("GET", "/api/v1/jobs/"+id+"/phase", "", "")
			if b == "ERROR" || b == "ABORTED" {
				_, doc, _ := api("GET", "/api/v1/jobs/"+id, "", "")
				t.Fatalf("the test ended %s: %s", b, doc)
			}
			return b == "COMPLETED"
		})
		return id
	}
	first := run()

	status, body, _ := api("GET", "/api/v1/jobs/"+first+"/results/matrix.csv?metric=bytes_read", "", "")
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if status != 200 || err != nil || len(rows) != len(agents)+2 {
		t.Fatalf("matrix.csv: %d %v\n%s", status, err, body)
	}
	if want := append(append([]string{"agent"}, urls...), "total"); strings.Join(rows[0], ",") != strings.Join(want, ",") {
		t.Fatalf("matrix.csv header %q, want %q", rows[0], want)
	}
	total := 0
	for _, s := range sizes {
		total += s
	}
	for r, id := range agents {
		row := rows[r+1]
		want := []string{id}
		for _, s := range sizes {
			want = append(want, strconv.Itoa(s))
		}
		want = append(want, strconv.Itoa(total))
		if strings.Join(row, ",") != strings.Join(want, ",") {
			t.Errorf("matrix.csv row %q, want %q", row, want)
		}
	}
	wantTotals := []string{"total"}
	for _, s := range sizes {
		wantTotals = append(wantTotals, strconv.Itoa(s*len(agents)))
	}
	if got := strings.Join(rows[len(rows)-1], ","); got != strings.Join(append(wantTotals, strconv.Itoa(total*len(agents))), ",") {
		t.Errorf("matrix.csv totals %q", got)
	}
	mu.Lock()
	for _, id := range agents {
		for i, s := range sizes {
			if got := served[fmt.Sprintf("%s %d", id, i)]; got != s {
				t.Errorf("server %d served %s %d bytes, want %d", i, id, got, s)
			}
		}
	}
	mu.Unlock()

	second := run()
	status, body, _ = api("GET", "/api/v1/compare?base="+first+"&other="+second+"&format=csv", "", "")
	rows, err = csv.NewReader(strings.NewReader(body)).ReadAll()
	if status != 200 || err != nil || len(rows) != 1+len(agents)*(len(urls)+1)+len(urls)+1 {
		t.Fatalf("compare: %d %v\n%s", status, err, body)
	}
	for _, row := range rows[1:] {
		if row[2] != row[3] || row[4] != "0" || row[5] != "1" {
			t.Errorf("compare row %q: want equal runs", row)
		}
	}
}
