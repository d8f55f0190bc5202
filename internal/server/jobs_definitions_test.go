package server

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

type definitionDoc struct {
	Name     string
	Version  int
	Owner    string
	Spec     json.RawMessage
	Versions []struct{ Version int }
}

// answerRuns answers n runs of agent a, reporting bytes_read from bytes.
func answerRuns(t *testing.T, a *bench.SimAgent, n int, bytes func(server string) int64) {
	t.Helper()
	for range n {
		r := nextRun(t, a)
		finish(t, a, jobproto.Result{Job: r.Job, Outcome: jobproto.OutcomeSucceeded,
			Metrics: json.RawMessage(fmt.Sprintf(`{"bytes_read": %d}`, bytes(r.Params["server"])))})
	}
}

// TestJobDefinitions: a test stored under a name runs with one request,
// optionally overriding parameters; a changed definition is a new version
// and the jobs started from the old one keep it; the definition lists its
// jobs; another owner can neither read nor change it; two runs of it
// compare cell by cell.
func TestJobDefinitions(t *testing.T) {
	s := startServer(t, nil)
	alice := s.userToken("alice", auth.ScopeJobsWrite)
	bob := s.userToken("bob", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1", "role=client"), s.agent("c2", "role=client")

	put := func(tok, name, body string) (int, definitionDoc, string) {
		t.Helper()
		status, b := s.api("PUT", "/api/v1/definitions/"+url.PathEscape(name), tok, body)
		var d definitionDoc
		json.Unmarshal(b, &d)
		return status, d, string(b)
	}
	status, d, body := put(alice, "nightly", `{"action":"download","targets":"role=client","parameters":{"server":["a","b"],"count":"2"},"labels":["campaign=w48"]}`)
	if status != http.StatusCreated || d.Name != "nightly" || d.Version != 1 || d.Owner != "alice" || len(d.Versions) != 1 {
		t.Fatalf("PUT definition: %d %s", status, body)
	}
	runDef := func(path string, v url.Values) string {
		t.Helper()
		status, body, h := s.form("POST", "/api/v1/definitions/nightly"+path, alice, v)
		if status != http.StatusSeeOther {
			t.Fatalf("run definition %s: %d %s", path, status, body)
		}
		return strings.TrimPrefix(h.Get("Location"), s.url+"/api/v1/jobs/")
	}

	// The first run: one request, every client from every server.
	first := runDef("/jobs", url.Values{"PHASE": {"RUN"}, "RUNID": {"week 48"}})
	answerRuns(t, c1, 2, func(server string) int64 { return map[string]int64{"a": 100, "b": 200}[server] })
	answerRuns(t, c2, 2, func(server string) int64 { return map[string]int64{"a": 300, "b": 400}[server] })
	doc := s.matrixJob(alice, first)
	wait.For(t, "the first run completed", func() bool { doc = s.matrixJob(alice, first); return doc.Phase == "COMPLETED" })
	if len(doc.JobInfo.Combinations) != 2 || !slices.Equal(doc.JobInfo.Labels, []string{"campaign=w48"}) {
		t.Fatalf("first run: %+v", doc.JobInfo)
	}
	var info struct {
		JobInfo struct {
			Definition struct {
				Name    string
				Version int
			}
		}
	}
	_, b := s.api("GET", "/api/v1/jobs/"+first, alice, "")
	if json.Unmarshal(b, &info); info.JobInfo.Definition.Name != "nightly" || info.JobInfo.Definition.Version != 1 {
		t.Fatalf("first run's definition: %s", b)
	}

	// A changed definition is version 2; version 1 stays as it was.
	if status, d, body = put(alice, "nightly", `{"action":"download","targets":"role=client","parameters":{"server":["a","b","c"],"count":"2"}}`); status != http.StatusCreated || d.Version != 2 || len(d.Versions) != 2 {
		t.Fatalf("PUT version 2: %d %s", status, body)
	}
	status, b = s.api("GET", "/api/v1/definitions/nightly?version=1", alice, "")
	if json.Unmarshal(b, &d); status != 200 || d.Version != 1 || !strings.Contains(string(d.Spec), `"server":["a","b"]`) {
		t.Fatalf("version 1 after the change: %d %s", status, b)
	}
	if doc := s.matrixJob(alice, first); len(doc.JobInfo.Combinations) != 2 {
		t.Fatalf("the first run changed with its definition: %+v", doc.JobInfo)
	}

	// The second run, of version 1 again, with a parameter overridden
	// (COUNT) and the matrix kept; a third of version 2 with SERVER
	// overridden by one value: a plain job.
	second := runDef("/versions/1/jobs", url.Values{"PHASE": {"RUN"}, "COUNT": {"3"}})
	answerRuns(t, c1, 2, func(server string) int64 { return map[string]int64{"a": 100, "b": 250}[server] })
	answerRuns(t, c2, 2, func(server string) int64 { return map[string]int64{"a": 0, "b": 400}[server] })
	wait.For(t, "the second run completed", func() bool { return s.matrixJob(alice, second).Phase == "COMPLETED" })
	if p := s.matrixJob(alice, second).Parameters; string(p["count"]) != `"3"` || string(p["server"]) != `["a","b"]` {
		t.Fatalf("second run's parameters: %s %s", p["count"], p["server"])
	}
	third := runDef("/jobs", url.Values{"SERVER": {"z"}})
	if p := s.matrixJob(alice, third).Parameters; string(p["server"]) != `"z"` || string(p["count"]) != `"2"` {
		t.Fatalf("third run's parameters: %v", p)
	}
	status, b = s.api("GET", "/api/v1/definitions/nightly/jobs", alice, "")
	var l struct{ Jobs []struct{ JobID string } }
	if json.Unmarshal(b, &l); status != 200 || len(l.Jobs) != 3 || l.Jobs[0].JobID != first || l.Jobs[1].JobID != second || l.Jobs[2].JobID != third {
		t.Fatalf("the definition's jobs: %d %s", status, b)
	}
	status, b = s.api("GET", "/api/v1/jobs?DEFINITION=nightly&RUNID=week%2048", alice, "")
	if json.Unmarshal(b, &l); status != 200 || len(l.Jobs) != 1 || l.Jobs[0].JobID != first {
		t.Fatalf("DEFINITION and RUNID filters: %d %s", status, b)
	}

	// The two runs compared: difference and ratio per cell, and totals.
	status, b = s.api("GET", "/api/v1/compare?base="+first+"&other="+second+"&metric=bytes_read", alice, "")
	var cmp struct {
		Metric  string
		Columns []string
		Agents  []string
		Cells   []struct {
			Agent, Column                  string
			Base, Other, Difference, Ratio json.RawMessage
		}
	}
	if status != 200 || json.Unmarshal(b, &cmp) != nil || cmp.Metric != "bytes_read" ||
		!slices.Equal(cmp.Columns, []string{"server=a", "server=b"}) || !slices.Equal(cmp.Agents, []string{"c1", "c2"}) {
		t.Fatalf("compare: %d %s", status, b)
	}
	got := map[string]string{}
	for _, c := range cmp.Cells {
		got[c.Agent+"|"+c.Column] = fmt.Sprintf("%s %s %s %s", c.Base, c.Other, c.Difference, c.Ratio)
	}
	for k, want := range map[string]string{
		"c1|server=a":    "100 100 0 1",
		"c1|server=b":    "200 250 50 1.25",
		"c2|server=a":    "300 0 -300 0",
		"c2|server=b":    "400 400 0 1",
		"c1|total":       "300 350 50 1.16667",
		"total|server=a": "400 100 -300 0.25",
		"total|total":    "1000 750 -250 0.75",
	} {
		if got[k] != want {
			t.Errorf("compare %s: %q, want %q", k, got[k], want)
		}
	}
	if len(cmp.Cells) != 2*3+3 {
		t.Errorf("compare: %d cells, want 9", len(cmp.Cells))
	}
	req, _ := http.NewRequest("GET", s.url+"/api/v1/compare?base="+second+"&other="+first+"&format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	resp.Body.Close()
	if err != nil || len(rows) != 10 || !slices.Equal(rows[0], []string{"agent", "column", "base", "other", "difference", "ratio"}) ||
		!slices.Equal(rows[4], []string{"c2", "server=a", "0", "300", "300", ""}) { // no ratio to a zero
		t.Fatalf("compare CSV: %v %q", err, rows)
	}

	// Another owner: no reading, no changing, no running, no comparing.
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/v1/definitions/nightly", ""},
		{"PUT", "/api/v1/definitions/nightly", `{"action":"download","targets":"c1"}`},
		{"POST", "/api/v1/definitions/nightly/jobs", `{}`},
		{"GET", "/api/v1/definitions/nightly/jobs", ""},
		{"GET", "/api/v1/compare?base=" + first + "&other=" + second, ""},
	} {
		if status, b := s.api(c.method, c.path, bob, c.body); status != http.StatusForbidden {
			t.Errorf("bob %s %s: %d %s, want 403", c.method, c.path, status, b)
		}
	}
	status, b = s.api("GET", "/api/v1/definitions", bob, "")
	if status != 200 || string(b) != "{\"definitions\":[]}\n" {
		t.Fatalf("bob's definitions: %d %s", status, b)
	}

	// Bad requests are 400s naming what is wrong.
	for _, c := range []struct{ method, path, body, code string }{
		{"PUT", "/api/v1/definitions/bad%09name", `{"action":"download","targets":"c1"}`, "invalid_definition_name"},
		{"PUT", "/api/v1/definitions/x", `{"action":"download"}`, "invalid_definition"},
		{"PUT", "/api/v1/definitions/x", `{"action":"download","targets":"c1","phase":"RUN"}`, "invalid_json"},
		{"POST", "/api/v1/definitions/nightly/jobs", `{"action":"other"}`, "invalid_parameter"},
		{"POST", "/api/v1/definitions/nightly/versions/0/jobs", `{}`, "invalid_parameter"},
		{"POST", "/api/v1/definitions/nightly/versions/9/jobs", `{}`, "definition_not_found"},
		{"GET", "/api/v1/compare?base=" + first, "", "invalid_parameter"},
	} {
		status, b := s.api(c.method, c.path, alice, c.body)
		var e struct{ Error struct{ Code string } }
		if json.Unmarshal(b, &e); status/100 != 4 || e.Error.Code != c.code {
			t.Errorf("%s %s %s: %d %s, want code %s", c.method, c.path, c.body, status, b, c.code)
		}
	}
}
