package server

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
	"github.com/switchboard-hub/switchboard/internal/store/postgres"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// downloadAction is the action the simulated agents of these tests offer.
func downloadAction() jobproto.Action {
	one, hundred := 1.0, 100.0
	return jobproto.Action{Name: "download", Timeout: jobproto.Duration(time.Minute), Params: []jobproto.Param{
		{Name: "server", Type: jobproto.ParamString, Required: true, Pattern: "[a-z0-9.-]+"},
		{Name: "count", Type: jobproto.ParamInt, Min: &one, Max: &hundred, Default: "1"},
	}}
}

func (s *testServer) agentToken(id string, labels ...string) string {
	c := s.claims(id, auth.ScopeAgent)
	c.Prefix, c.Agent, c.Labels, c.BookingID, c.Subject = "agent", id, labels, "", "agent-"+id
	return s.sign(c)
}

func (s *testServer) userToken(sub string, scopes ...string) string {
	c := s.claims("", scopes...)
	c.Subject, c.Prefix, c.BookingID = sub, "", ""
	return s.sign(c)
}

// agent connects a simulated agent offering download.
func (s *testServer) agent(id string, labels ...string) *bench.SimAgent {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := bench.DialAgent(ctx, s.url, s.agentToken(id, labels...),
		jobproto.Hello{Agent: id, Labels: labels, Actions: []jobproto.Action{downloadAction()}}, nil)
	if err != nil {
		s.t.Fatalf("agent %s: %v", id, err)
	}
	s.t.Cleanup(func() { a.CloseNow() })
	return a
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// form sends a form-encoded request without following redirects.
func (s *testServer) form(method, path, tok string, v url.Values) (int, string, http.Header) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 && !json.Valid(b) {
		s.t.Fatalf("%s %s: status %d without a JSON body: %s", method, path, resp.StatusCode, b)
	}
	if resp.StatusCode >= 500 {
		s.t.Fatalf("%s %s: status %d: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, string(b), resp.Header
}

// createJob creates a job and returns its id.
func (s *testServer) createJob(tok string, v url.Values) string {
	s.t.Helper()
	status, body, h := s.form("POST", "/api/v1/jobs", tok, v)
	if status != http.StatusSeeOther {
		s.t.Fatalf("create job: status %d: %s", status, body)
	}
	loc := h.Get("Location")
	if !strings.HasPrefix(loc, s.url+"/api/v1/jobs/") {
		s.t.Fatalf("create job: Location %q", loc)
	}
	return strings.TrimPrefix(loc, s.url+"/api/v1/jobs/")
}

type jobDoc struct {
	JobID        string            `json:"jobId"`
	RunID        string            `json:"runId"`
	OwnerID      *string           `json:"ownerId"`
	Phase        string            `json:"phase"`
	Parameters   map[string]string `json:"parameters"`
	ErrorSummary *struct {
		Message string `json:"message"`
	} `json:"errorSummary"`
	Results []struct {
		ID   string `json:"id"`
		Href string `json:"href"`
	} `json:"results"`
	JobInfo struct {
		Runs []struct {
			Agent    string          `json:"agent"`
			State    string          `json:"state"`
			ExitCode int             `json:"exitCode"`
			Metrics  json.RawMessage `json:"metrics"`
		} `json:"runs"`
	} `json:"jobInfo"`
}

func (s *testServer) job(tok, id, query string) jobDoc {
	s.t.Helper()
	status, b := s.api("GET", "/api/v1/jobs/"+id+query, tok, "")
	if status != http.StatusOK {
		s.t.Fatalf("GET job %s: %d %s", id, status, b)
	}
	var d jobDoc
	if err := json.Unmarshal(b, &d); err != nil {
		s.t.Fatalf("job document: %v: %s", err, b)
	}
	return d
}

func (s *testServer) waitPhase(tok, id, phase string) jobDoc {
	s.t.Helper()
	var d jobDoc
	wait.For(s.t, "job "+id+" in phase "+phase, func() bool {
		d = s.job(tok, id, "")
		return d.Phase == phase
	})
	return d
}

func nextRun(t *testing.T, a *bench.SimAgent) *jobproto.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := a.Next(ctx)
	if err != nil {
		t.Fatalf("agent %s: %v", a.ID, err)
	}
	r, ok := m.(*jobproto.Run)
	if !ok {
		t.Fatalf("agent %s: expected a run, got %T %+v", a.ID, m, m)
	}
	return r
}

func send(t *testing.T, a *bench.SimAgent, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Send(ctx, v); err != nil {
		t.Fatalf("agent %s: send: %v", a.ID, err)
	}
}

func finish(t *testing.T, a *bench.SimAgent, res jobproto.Result) *jobproto.Ack {
	t.Helper()
	res.Type = jobproto.TypeResult
	if res.StartedAt.IsZero() {
		res.StartedAt, res.EndedAt = time.Now().Add(-time.Second), time.Now()
	}
	send(t, a, res)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := a.AwaitAck(ctx, res.Job)
	if err != nil {
		t.Fatalf("agent %s: %v", a.ID, err)
	}
	return ack
}

func TestJobEndToEnd(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1", "role=client", "site=UNL"), s.agent("c2", "role=client")
	s.agent("d1", "role=server")

	id := s.createJob(user, url.Values{"ACTION": {"download"}, "TARGETS": {"role=client"},
		"SERVER": {"data-a.example.org"}, "RUNID": {"scale-42"}})
	d := s.job(user, id, "")
	if d.Phase != "PENDING" || d.RunID != "scale-42" || d.OwnerID == nil || *d.OwnerID != "alice" {
		t.Fatalf("new job: %+v", d)
	}
	if d.Parameters["server"] != "data-a.example.org" || d.Parameters["count"] != "1" || d.Parameters["action"] != "download" {
		t.Fatalf("parameters (with the default applied): %v", d.Parameters)
	}

	// The owner follows the live log through the normal access flow.
	logTok := s.sign(s.claims(jobs.LogTopic(id), auth.ScopeRead))
	logConn := s.dial(jobs.LogTopic(id), logTok)

	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"RUN"}}); status != http.StatusSeeOther {
		t.Fatalf("PHASE=RUN: %d %s", status, body)
	}
	r1, r2 := nextRun(t, c1), nextRun(t, c2)
	if r1.Job != id || r1.Action != "download" || r1.Params["server"] != "data-a.example.org" || r2.Job != id {
		t.Fatalf("runs: %+v %+v", r1, r2)
	}
	if d := s.job(user, id, ""); d.Phase != "EXECUTING" {
		t.Fatalf("phase after RUN: %s", d.Phase)
	}
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	send(t, c1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"fetching 1 file"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, line, err := logConn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ll struct {
		Agent, Stream string
		Lines         []string
	}
	if json.Unmarshal(line, &ll); ll.Agent != "c1" || ll.Stream != "stdout" || len(ll.Lines) != 1 || ll.Lines[0] != "fetching 1 file" {
		t.Fatalf("log line: %s", line)
	}
	// Nobody else writes to a job's log topic.
	if status, _ := s.api("POST", "/session/"+jobs.LogTopic(id), s.sign(s.claims(jobs.LogTopic(id), auth.ScopeWrite)), ""); status != http.StatusForbidden {
		t.Fatalf("write-only token on a job log: %d, want 403", status)
	}

	out := []byte("bytes,1048576000\n")
	if status, err := c1.Upload(ctx, id, "report.csv", out); err != nil || status != http.StatusCreated {
		t.Fatalf("upload: %d %v", status, err)
	}
	ack := finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, ExitCode: 0,
		Metrics: json.RawMessage(`{"bytes_read":{"server-a":1048576000}}`), Files: []jobproto.File{bench.FileOf("report.csv", out)}})
	if ack.Error != "" {
		t.Fatalf("ack: %+v", ack)
	}
	if d := s.job(user, id, ""); d.Phase != "EXECUTING" {
		t.Fatalf("phase with one run left: %s", d.Phase)
	}
	finish(t, c2, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Metrics: json.RawMessage(`{"bytes_read":{"server-a":5}}`)})
	d = s.waitPhase(user, id, "COMPLETED")
	var ids []string
	for _, r := range d.Results {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"summary", "c1/report.csv", "logs/c1.txt"}) { // c1 sent a line: its stored log
		t.Fatalf("results: %v", ids)
	}
	// UWS clients ask for XML.
	req, _ := http.NewRequest("GET", s.url+"/api/v1/jobs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+user)
	req.Header.Set("Accept", "application/xml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	xmlDoc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/xml") ||
		!strings.Contains(string(xmlDoc), `<uws:phase>COMPLETED</uws:phase>`) || !strings.Contains(string(xmlDoc), `version="1.1"`) {
		t.Fatalf("XML job: %s\n%s", ct, xmlDoc)
	}
	// An oversized form body gets 413.
	big := url.Values{"PHASE": {strings.Repeat("x", 2<<20)}}
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id, user, big); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("2 MiB body: %d %s", status, body)
	}
	status, body := s.api("GET", "/api/v1/jobs/"+id+"/results/summary", user, "")
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if status != 200 || err != nil {
		t.Fatalf("summary: %d %v %s", status, err, body)
	}
	want := [][]string{{"agent", "state", "exit_code", "metric", "value"},
		{"c1", "succeeded", "0", "bytes_read.server-a", "1048576000"},
		{"c2", "succeeded", "0", "bytes_read.server-a", "5"}}
	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Fatalf("summary rows %q, want %q", rows, want)
	}
	if status, body := s.api("GET", "/api/v1/jobs/"+id+"/results/c1/report.csv", user, ""); status != 200 || string(body) != string(out) {
		t.Fatalf("file result: %d %q", status, body)
	}
	// A repeated result (the agent did not see the ack) is acked again.
	if ack := finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded}); ack.Error != "" {
		t.Fatalf("repeat ack: %+v", ack)
	}
	// The job list, as its owner and as someone else.
	status, body = s.api("GET", "/api/v1/jobs", user, "")
	if status != 200 || !strings.Contains(string(body), id) {
		t.Fatalf("job list: %d %s", status, body)
	}
	bob := s.userToken("bob", auth.ScopeJobsRead)
	if status, body = s.api("GET", "/api/v1/jobs", bob, ""); strings.Contains(string(body), id) {
		t.Fatalf("bob sees alice's job: %s", body)
	}
	if status, _ = s.api("GET", "/api/v1/jobs/"+id, bob, ""); status != http.StatusForbidden {
		t.Fatalf("bob reads alice's job: %d, want 403", status)
	}
	if status, _ = s.api("GET", "/api/v1/jobs/"+id, s.adminToken(), ""); status != http.StatusOK {
		t.Fatalf("admin reads alice's job: %d", status)
	}
	// RUN again in a final phase is refused.
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"RUN"}}); status != http.StatusForbidden {
		t.Fatalf("RUN a COMPLETED job: %d %s", status, body)
	}
	// Delete: 303 to the list, then 404.
	if status, _, h := s.form("DELETE", "/api/v1/jobs/"+id, user, nil); status != http.StatusSeeOther || h.Get("Location") != s.url+"/api/v1/jobs" {
		t.Fatalf("delete: %d %v", status, h)
	}
	if status, _ = s.api("GET", "/api/v1/jobs/"+id, user, ""); status != http.StatusNotFound {
		t.Fatalf("deleted job: %d", status)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.ResultsDir, id)); !os.IsNotExist(err) {
		t.Fatalf("files of a deleted job remain: %v", err)
	}
}

func TestJobFailureSummaryAndNoMatch(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1", "role=client"), s.agent("c2", "role=client")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1,c2"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	nextRun(t, c2)
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	finish(t, c2, jobproto.Result{Job: id, Outcome: jobproto.OutcomeFailed, ExitCode: 3, Error: "server a refused"})
	d := s.waitPhase(user, id, "ERROR")
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "c2 failed (exit status 3): server a refused") {
		t.Fatalf("error summary: %+v", d.ErrorSummary)
	}
	if status, body := s.api("GET", "/api/v1/jobs/"+id+"/error", user, ""); status != 200 || !strings.Contains(string(body), "c2") {
		t.Fatalf("error resource: %d %s", status, body)
	}

	// A known agent that is not connected, with REQUIRE=available: the
	// job goes to ERROR at RUN (without it, the run waits for the agent:
	// jobs_targets_test.go).
	c2.Close()
	wait.For(t, "c2 disconnected", func() bool {
		_, b := s.api("GET", "/api/v1/agents", user, "")
		return strings.Contains(string(b), `"id":"c2","connected":false`)
	})
	id = s.createJob(user, url.Values{"action": {"download"}, "targets": {"c2"}, "REQUIRE": {"available"}, "server": {"a"}, "PHASE": {"RUN"}})
	d = s.waitPhase(user, id, "ERROR")
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "no targeted agent can run") {
		t.Fatalf("no-match summary: %+v", d.ErrorSummary)
	}
}

func TestJobBadInput(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	s.agent("c1", "role=client")
	other := downloadAction()
	other.Timeout = jobproto.Duration(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := bench.DialAgent(ctx, s.url, s.agentToken("c9", "role=odd"),
		jobproto.Hello{Agent: "c9", Labels: []string{"role=odd"}, Actions: []jobproto.Action{other}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.CloseNow()
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}})

	for _, tc := range []struct {
		name   string
		method string
		path   string
		tok    string
		form   url.Values
		status int
		code   string
	}{
		{"unknown action", "POST", "/api/v1/jobs", user, url.Values{"action": {"rm"}, "targets": {"c1"}}, 400, "unknown_action"},
		{"missing action", "POST", "/api/v1/jobs", user, url.Values{"targets": {"c1"}}, 400, "invalid_action"},
		{"param fails its pattern", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"A B"}}, 400, "invalid_parameter"},
		{"param above max", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "count": {"101"}}, 400, "invalid_parameter"},
		{"required param missing", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1"}}, 400, "invalid_parameter"},
		{"unknown param", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "cmd": {"x"}}, 400, "invalid_parameter"},
		{"unknown agent", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"nobody"}, "server": {"a"}}, 400, "unknown_target"},
		{"selector matches nothing", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"role=none"}, "server": {"a"}}, 400, "unknown_target"},
		{"ids and labels mixed", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1,role=client"}, "server": {"a"}}, 400, "invalid_targets"},
		{"empty targets", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {""}, "server": {"a"}}, 400, "invalid_targets"},
		{"declared differently", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1,c9"}, "server": {"a"}}, 400, "ambiguous_action"},
		{"repeated parameter", "POST", "/api/v1/jobs", user, url.Values{"action": {"download", "download"}, "targets": {"c1"}}, 400, "invalid_parameter"},
		{"bad destruction", "POST", "/api/v1/jobs", user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "DESTRUCTION": {"tomorrow"}}, 400, "invalid_parameter"},
		{"destruction in the past", "POST", "/api/v1/jobs/" + id, user, url.Values{"DESTRUCTION": {"2001-01-01T00:00:00Z"}}, 400, "invalid_parameter"},
		{"bad execution duration", "POST", "/api/v1/jobs/" + id, user, url.Values{"EXECUTIONDURATION": {"-5"}}, 400, "invalid_parameter"},
		{"unknown phase", "POST", "/api/v1/jobs/" + id + "/phase", user, url.Values{"PHASE": {"SUSPEND"}}, 400, "invalid_parameter"},
		{"bad WAIT", "GET", "/api/v1/jobs/" + id + "?WAIT=soon", user, nil, 400, "invalid_parameter"},
		{"bad LAST", "GET", "/api/v1/jobs?LAST=0", user, nil, 400, "invalid_parameter"},
		{"bad AFTER", "GET", "/api/v1/jobs?AFTER=yesterday", user, nil, 400, "invalid_parameter"},
		{"bad PHASE filter", "GET", "/api/v1/jobs?PHASE=DONE", user, nil, 400, "invalid_parameter"},
		{"unknown job", "GET", "/api/v1/jobs/nosuchjob", user, nil, 404, "job_not_found"},
		{"unknown sub-resource", "GET", "/api/v1/jobs/" + id + "/nothing", user, nil, 404, "not_found"},
		{"no token", "GET", "/api/v1/jobs", "", nil, 401, ""},
		{"read scope cannot create", "POST", "/api/v1/jobs", s.userToken("alice", auth.ScopeJobsRead), url.Values{"action": {"download"}}, 403, "scope_forbidden"},
		{"relay token cannot read jobs", "GET", "/api/v1/jobs", s.token("t", auth.ScopeRead), nil, 403, "scope_forbidden"},
		{"another owner's job", "POST", "/api/v1/jobs/" + id + "/phase", s.userToken("bob", auth.ScopeJobsWrite), url.Values{"PHASE": {"RUN"}}, 403, "job_forbidden"},
		{"ABORT then RUN", "", "", "", nil, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.method == "" {
				if status, _, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"ABORT"}}); status != http.StatusSeeOther {
					t.Fatalf("ABORT a PENDING job: %d", status)
				}
				if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"RUN"}}); status != http.StatusForbidden || errCode([]byte(body)) != "phase_forbidden" {
					t.Fatalf("RUN an ABORTED job: %d %s", status, body)
				}
				return
			}
			status, body, _ := s.form(tc.method, tc.path, tc.tok, tc.form)
			if status != tc.status || (tc.code != "" && errCode([]byte(body)) != tc.code) {
				t.Fatalf("got %d %s, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
}

func TestJobUploadBadInput(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Jobs.MaxFileBytes, c.Jobs.MaxRunBytes = 1000, 1500 })
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1"), s.agent("c2")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	ctx := context.Background()
	if status, _ := c1.Upload(ctx, id, "big.bin", make([]byte, 1001)); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("file above the limit: %d", status)
	}
	if status, _ := c1.Upload(ctx, id, "a.bin", make([]byte, 900)); status != http.StatusCreated {
		t.Fatalf("a.bin: %d", status)
	}
	if status, _ := c1.Upload(ctx, id, "b.bin", make([]byte, 900)); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("run total above the limit: %d", status)
	}
	if status, _ := c1.Upload(ctx, id, ".hidden", []byte("x")); status != http.StatusBadRequest {
		t.Fatalf("bad name: %d", status)
	}
	if status, _ := c2.Upload(ctx, id, "x.txt", []byte("x")); status != http.StatusNotFound {
		t.Fatalf("an agent without a run in the job: %d", status)
	}
	req0, _ := http.NewRequest("PUT", s.url+"/api/v1/jobs/"+id+"/runs/c1/files/x.txt", strings.NewReader("x"))
	req0.Header.Set("Authorization", "Bearer "+s.agentToken("c2"))
	req0.Header.Set("X-Content-SHA256", strings.Repeat("0", 64))
	if status, body, _ := do(t, req0); status != http.StatusForbidden || body != "agent_forbidden" {
		t.Fatalf("upload into another agent's run: %d %s", status, body)
	}
	req, _ := http.NewRequest("PUT", s.url+"/api/v1/jobs/"+id+"/runs/c1/files/x.txt", strings.NewReader("data"))
	req.Header.Set("Authorization", "Bearer "+s.agentToken("c1"))
	req.Header.Set("X-Content-SHA256", strings.Repeat("0", 64))
	if status, body, _ := do(t, req); status != http.StatusBadRequest || body != "checksum_mismatch" {
		t.Fatalf("checksum mismatch: %d %s", status, body)
	}
	// A result naming a file that was not uploaded is not acked.
	res := jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Files: []jobproto.File{bench.FileOf("missing.txt", []byte("x"))}}
	if ack := finish(t, c1, res); ack.Error == "" {
		t.Fatal("a result with a missing file was acked")
	}
	if d := s.job(user, id, ""); d.Phase != "EXECUTING" {
		t.Fatalf("phase after a refused result: %s", d.Phase)
	}
	if status, _ := c1.Upload(ctx, id, "missing.txt", []byte("x")); status != http.StatusCreated {
		t.Fatalf("upload: %d", status)
	}
	if ack := finish(t, c1, res); ack.Error != "" {
		t.Fatalf("ack after upload: %+v", ack)
	}
	s.waitPhase(user, id, "COMPLETED")
	if status, _ := c1.Upload(ctx, id, "late.txt", []byte("x")); status != http.StatusConflict {
		t.Fatalf("upload after the result: %d", status)
	}
}

func TestJobWait(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}})

	// PHASE=X returns at once when the job is not in X.
	start := time.Now()
	if d := s.job(user, id, "?WAIT=30&PHASE=EXECUTING"); d.Phase != "PENDING" || time.Since(start) > 5*time.Second {
		t.Fatalf("WAIT with another PHASE: %s after %s", d.Phase, time.Since(start))
	}
	// A final phase returns at once too; a WAIT on an active one returns
	// at the change.
	got := make(chan jobDoc, 1)
	go func() {
		status, b := s.api("GET", "/api/v1/jobs/"+id+"?WAIT=30", user, "")
		var d jobDoc
		json.Unmarshal(b, &d)
		if status != 200 {
			d.Phase = "status " + http.StatusText(status)
		}
		got <- d
	}()
	// Wait until the request is blocked: it shows as a watcher.
	wait.For(t, "the WAIT request to block", func() bool { return s.jobs.Waiting(id) > 0 })
	changedAt := time.Now()
	s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"RUN"}})
	d := <-got
	if d.Phase == "PENDING" || d.Phase == "" || time.Since(changedAt) > 5*time.Second {
		t.Fatalf("WAIT returned %q after %s", d.Phase, time.Since(changedAt))
	}
	nextRun(t, c1)
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	s.waitPhase(user, id, "COMPLETED")
	start = time.Now()
	if d := s.job(user, id, "?WAIT=-1"); d.Phase != "COMPLETED" || time.Since(start) > 5*time.Second {
		t.Fatalf("WAIT on a final phase: %s after %s", d.Phase, time.Since(start))
	}
	// LAST, AFTER and PHASE filters of the list.
	status, b := s.api("GET", "/api/v1/jobs?PHASE=COMPLETED&LAST=1", user, "")
	if status != 200 || !strings.Contains(string(b), id) {
		t.Fatalf("filtered list: %d %s", status, b)
	}
	status, b = s.api("GET", "/api/v1/jobs?AFTER="+url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), user, "")
	if status != 200 || strings.Contains(string(b), id) {
		t.Fatalf("AFTER in the future: %d %s", status, b)
	}
}

func TestJobLostAgentAndReconnect(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Jobs.LostGrace = 300 * time.Millisecond })
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1"), s.agent("c2")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1,c2"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	nextRun(t, c2)
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	send(t, c2, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	wait.For(t, "both runs running", func() bool {
		d := s.job(user, id, "")
		return len(d.JobInfo.Runs) == 2 && d.JobInfo.Runs[0].State == "running" && d.JobInfo.Runs[1].State == "running"
	})
	// c1 drops and comes back at once, still running the job: not lost.
	c1.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c1b, err := bench.DialAgent(ctx, s.url, s.agentToken("c1"), jobproto.Hello{Agent: "c1",
		Actions: []jobproto.Action{downloadAction()}, Running: []string{id}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c1b.CloseNow()
	// c2 drops for good: its run is lost after the grace period.
	c2.CloseNow()
	d := s.waitPhase(user, id, "EXECUTING")
	wait.For(t, "c2's run lost", func() bool {
		d = s.job(user, id, "")
		return len(d.JobInfo.Runs) == 2 && d.JobInfo.Runs[1].State == "lost"
	})
	if d.JobInfo.Runs[0].State != "running" {
		t.Fatalf("c1's run after its reconnect: %s", d.JobInfo.Runs[0].State)
	}
	finish(t, c1b, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	d = s.waitPhase(user, id, "ERROR")
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "c2 lost") {
		t.Fatalf("summary: %+v", d.ErrorSummary)
	}
}

func TestJobAbortExecutionDurationAndDestruction(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")

	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	if status, _, _ := s.form("POST", "/api/v1/jobs/"+id, user, url.Values{"PHASE": {"ABORT"}}); status != http.StatusSeeOther {
		t.Fatalf("abort: %d", status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := c1.Next(ctx)
	if ab, ok := m.(*jobproto.Abort); err != nil || !ok || ab.Job != id {
		t.Fatalf("agent got %T %+v %v, want an abort", m, m, err)
	}
	s.waitPhase(user, id, "ABORTED")
	// The agent's late result is still stored and acked.
	if ack := finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeAborted, ExitCode: -1}); ack.Error != "" {
		t.Fatalf("ack: %+v", ack)
	}

	id = s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "EXECUTIONDURATION": {"1"}, "PHASE": {"RUN"}})
	if r := nextRun(t, c1); r.Timeout <= 0 || time.Duration(r.Timeout) > time.Second {
		t.Fatalf("run timeout %v, want the execution duration", time.Duration(r.Timeout))
	}
	d := s.waitPhase(user, id, "ABORTED")
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "execution duration") {
		t.Fatalf("summary: %+v", d.ErrorSummary)
	}

	id = s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	for {
		if _, ok := nextRunOrAbort(t, c1).(*jobproto.Run); ok {
			break
		}
	}
	out := []byte("x")
	c1.Upload(ctx, id, "out.txt", out)
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Files: []jobproto.File{bench.FileOf("out.txt", out)}})
	s.waitPhase(user, id, "COMPLETED")
	soon := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/destruction", user, url.Values{"DESTRUCTION": {soon}}); status != http.StatusSeeOther {
		t.Fatalf("destruction: %d %s", status, body)
	}
	s.waitPhase(user, id, "ARCHIVED")
	if d := s.job(user, id, ""); len(d.Results) != 0 {
		t.Fatalf("an archived job has results: %+v", d.Results)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.ResultsDir, id)); !os.IsNotExist(err) {
		t.Fatalf("files of an archived job remain: %v", err)
	}
	// ARCHIVED jobs are listed only when asked for.
	if _, b := s.api("GET", "/api/v1/jobs", user, ""); strings.Contains(string(b), id) {
		t.Fatal("archived job in the default list")
	}
	if _, b := s.api("GET", "/api/v1/jobs?PHASE=ARCHIVED", user, ""); !strings.Contains(string(b), id) {
		t.Fatal("archived job missing with PHASE=ARCHIVED")
	}
}

func nextRunOrAbort(t *testing.T, a *bench.SimAgent) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := a.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAgentChannel(t *testing.T) {
	s := startServer(t, nil)
	stats := s.dial(jobs.AgentsTopic, s.sign(s.claims(jobs.AgentsTopic, auth.ScopeRead, auth.ScopeStats)))
	a := s.agent("c1", "role=client")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, ev, err := stats.Read(ctx)
	if err != nil || !strings.Contains(string(ev), `"event":"connected"`) || !strings.Contains(string(ev), `"id":"c1"`) {
		t.Fatalf("agents topic: %s %v", ev, err)
	}
	user := s.userToken("alice", auth.ScopeJobsRead)
	_, b := s.api("GET", "/api/v1/agents", user, "")
	if !strings.Contains(string(b), `"id":"c1","connected":true`) || !strings.Contains(string(b), `"role=client"`) || !strings.Contains(string(b), `"download"`) {
		t.Fatalf("agents: %s", b)
	}
	a.Close()
	if _, ev, err = stats.Read(ctx); err != nil || !strings.Contains(string(ev), `"event":"disconnected"`) {
		t.Fatalf("agents topic: %s %v", ev, err)
	}

	// A label the token does not allow, another agent's id, a bad hello.
	_, err = bench.DialAgent(ctx, s.url, s.agentToken("c2", "role=client"), jobproto.Hello{Agent: "c2", Labels: []string{"role=server"}}, nil)
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != 1008 || !strings.Contains(ce.Reason, "label_forbidden") {
		t.Fatalf("forbidden label: %v", err)
	}
	c2, err := bench.DialAgent(ctx, s.url, s.agentToken("c2", "role=*"), jobproto.Hello{Agent: "c2", Labels: []string{"role=server"}}, nil)
	if err != nil {
		t.Fatalf("role=* allows role=server: %v", err)
	}
	c2.Close()
	c3, err := client.Dial(ctx, s.url, "c3", s.agentToken("c3"), &client.Options{Prefix: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	defer c3.CloseNow()
	c3.Write(ctx, client.Text, []byte(`{"type":"hello","agent":"c4"}`))
	if _, _, err = c3.Read(ctx); !errors.As(err, &ce) || ce.Code != 1008 {
		t.Fatalf("hello for another agent: %v", err)
	}
	wrongAgent := s.claims("c5", auth.ScopeAgent)
	wrongAgent.Prefix, wrongAgent.Agent = "agent", "c6"
	if status, body := s.api("POST", "/agent/c5", s.sign(wrongAgent), ""); status != http.StatusForbidden || errCode(body) != "agent_forbidden" {
		t.Fatalf("token for another agent: %d %s", status, body)
	}
	if status, body := s.api("POST", "/agent/c5", s.token("c5", auth.ScopeRead), ""); status != http.StatusForbidden {
		t.Fatalf("relay token on the agent prefix: %d %s", status, body)
	}
	// A second connection of the same agent supersedes the first.
	first := s.agent("c7")
	s.agent("c7")
	if _, err := first.Next(ctx); !errors.As(err, &ce) || ce.Code != 4009 {
		t.Fatalf("superseded agent: %v", err)
	}
}

func TestJobsSurviveRestart(t *testing.T) {
	dir, blobs := t.TempDir(), t.TempDir()
	st := openStore(t, dir)
	mod := func(c *Config, d *Deps) { d.Store, c.ResultsDir, c.Jobs.LostGrace = st, blobs, 500*time.Millisecond }
	s := startServer(t, mod)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1"), s.agent("c2")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1,c2"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	nextRun(t, c2)
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	send(t, c2, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	wait.For(t, "runs started", func() bool {
		d := s.job(user, id, "")
		return len(d.JobInfo.Runs) == 2 && d.JobInfo.Runs[1].State == "running"
	})
	c1.CloseNow() // (agents that do not read would hold up the close handshake)
	c2.CloseNow()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// While the hub is down c1 finishes; c2 never comes back.
	s2 := startServer(t, mod)
	user = s2.userToken("alice", auth.ScopeJobsWrite)
	if d := s2.job(user, id, ""); d.Phase != "EXECUTING" {
		t.Fatalf("phase after restart: %s", d.Phase)
	}
	c1b := s2.agent("c1")
	out := []byte("done")
	ctx := context.Background()
	if status, err := c1b.Upload(ctx, id, "out.txt", out); status != http.StatusCreated {
		t.Fatalf("upload after restart: %d %v", status, err)
	}
	if ack := finish(t, c1b, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Files: []jobproto.File{bench.FileOf("out.txt", out)}}); ack.Error != "" {
		t.Fatalf("ack: %+v", ack)
	}
	d := s2.waitPhase(user, id, "ERROR")
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "c2 lost") || d.JobInfo.Runs[0].State != "succeeded" {
		t.Fatalf("after restart: %+v %+v", d.ErrorSummary, d.JobInfo.Runs)
	}
	if _, b := s2.api("GET", "/api/v1/agents", user, ""); !strings.Contains(string(b), `"id":"c2","connected":false`) {
		t.Fatalf("agents after restart: %s", b)
	}
}

func TestRevokingAnAgentClosesItsChannel(t *testing.T) {
	s := startServer(t, nil)
	a := s.agent("c1")
	status, body := s.api("POST", "/api/v1/revocations", s.adminToken(), `{"kind":"subject","value":"agent-c1","reason":"retired","ttl":"1h"}`)
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("revoke: %d %s", status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ce *client.CloseError
	if _, err := a.Next(ctx); !errors.As(err, &ce) || ce.Code != 4003 {
		t.Fatalf("revoked agent: %v, want close 4003", err)
	}
	if status, body := s.api("POST", "/agent/c1", s.agentToken("c1"), ""); status != http.StatusForbidden {
		t.Fatalf("revoked agent's access: %d %s", status, body)
	}
}

func TestJobRunNeverStartedIsLost(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Jobs.LostGrace = 300 * time.Millisecond })
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1) // and never answer it
	d := s.waitPhase(user, id, "ERROR")
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "did not start the run") {
		t.Fatalf("summary: %+v", d.ErrorSummary)
	}
}

// TestJobRunForgottenBySupersedingConnectionIsLost: an agent restarts and
// connects again before the hub notices its old connection died; its new
// hello does not list the run it was running. The run must end as lost
// after the grace period, not stay running for ever.
func TestJobRunForgottenBySupersedingConnectionIsLost(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Jobs.LostGrace = 300 * time.Millisecond })
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	wait.For(t, "run running", func() bool {
		d := s.job(user, id, "")
		return len(d.JobInfo.Runs) == 1 && d.JobInfo.Runs[0].State == "running"
	})
	s.agent("c1") // supersedes the first connection; knows nothing of the run
	d := s.waitPhase(user, id, "ERROR")
	if d.JobInfo.Runs[0].State != "lost" {
		t.Fatalf("run: %+v", d.JobInfo.Runs)
	}
}

// TestJobQueuedWithRunsAfterCrash: a crash between recording a job's runs
// and moving it to EXECUTING leaves a QUEUED job with runs. If their agent
// never comes back, the runs are lost and the job ends in ERROR.
func TestJobQueuedWithRunsAfterCrash(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	acts, _ := json.Marshal([]jobproto.Action{downloadAction()})
	if err := st.PutAgent(ctx, store.Agent{ID: "c2", Actions: acts, FirstSeen: time.Now(), LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateJob(ctx, store.Job{ID: "crashedjob", Owner: "alice", Action: "download", Targets: "c2",
		Params: map[string]string{"server": "a", "count": "1"}, Phase: store.PhaseQueued, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutRun(ctx, store.Run{JobID: "crashedjob", AgentID: "c2", State: store.RunDispatched, ExitCode: -1}); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(c *Config, d *Deps) { d.Store, c.Jobs.LostGrace = st, 300*time.Millisecond })
	user := s.userToken("alice", auth.ScopeJobsRead)
	d := s.waitPhase(user, "crashedjob", "ERROR")
	if len(d.JobInfo.Runs) != 1 || d.JobInfo.Runs[0].State != "lost" {
		t.Fatalf("runs: %+v", d.JobInfo.Runs)
	}
}

// TestAgentCannotWriteAnotherJobsLog: an agent that lists, in its hello,
// a job it has no run in cannot publish on that job's log.
func TestAgentCannotWriteAnotherJobsLog(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	logConn := s.dial(jobs.LogTopic(id), s.sign(s.claims(jobs.LogTopic(id), auth.ScopeRead)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evil, err := bench.DialAgent(ctx, s.url, s.agentToken("c2"), jobproto.Hello{Agent: "c2",
		Actions: []jobproto.Action{downloadAction()}, Running: []string{id}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer evil.CloseNow()
	send(t, evil, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"forged"}})
	// The hub handles an agent's messages in order: once this ack is back,
	// the log message has been handled.
	finish(t, evil, jobproto.Result{Job: "nosuchjob", Outcome: jobproto.OutcomeSucceeded})
	send(t, c1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"genuine"}})
	_, line, err := logConn.Read(ctx)
	if err != nil || !strings.Contains(string(line), "genuine") {
		t.Fatalf("first log line: %s %v", line, err)
	}
}

// TestAgentConnectingDuringStop: an agent whose hello arrives while the
// manager stops is refused, and Stop does not wait for it.
func TestAgentConnectingDuringStop(t *testing.T) {
	s := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	late, err := client.Dial(ctx, s.url, "c1", s.agentToken("c1"), &client.Options{Prefix: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	defer late.CloseNow()
	stopped := make(chan error, 1)
	go func() {
		sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer scancel()
		stopped <- s.jobs.Stop(sctx)
	}()
	// Stop has begun once new agents are turned away.
	var ce *client.CloseError
	wait.For(t, "the manager to stop", func() bool {
		a, err := bench.DialAgent(ctx, s.url, s.agentToken("probe"), jobproto.Hello{Agent: "probe"}, nil)
		if err == nil {
			a.CloseNow()
			return false
		}
		return errors.As(err, &ce) && ce.Code == 1001
	})
	hello, _ := json.Marshal(jobproto.Hello{Type: jobproto.TypeHello, Agent: "c1"})
	late.Write(ctx, client.Text, hello)
	if _, m, err := late.Read(ctx); !errors.As(err, &ce) || ce.Code != 1001 {
		t.Fatalf("hello during Stop: got %s %v, want close 1001", m, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// TestJobLongNonASCIIErrorsOnPostgres: errors cut for the summary must stay
// valid UTF-8 (PostgreSQL refuses anything else), and NUL bytes in output
// must not make a result unstorable: the job reaches its final phase.
func TestJobLongNonASCIIErrorsOnPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := postgres.Open(ctx, pgtest.Start(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := startServer(t, func(c *Config, d *Deps) { d.Store = db })
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	send(t, c1, jobproto.Result{Type: jobproto.TypeResult, Job: id, Outcome: jobproto.OutcomeFailed, ExitCode: 1,
		StartedAt: time.Now().Add(-time.Second), EndedAt: time.Now(),
		Error: "x" + strings.Repeat("é", 300), Stdout: "bin\x00ary", Stderr: strings.Repeat("é", jobproto.MaxTailBytes) + "\x00"})
	// The run may be sent again (the resend after hello races the
	// dispatch): skip it, as an agent would answer it, until the ack.
	for {
		m := nextRunOrAbort(t, c1)
		if ack, ok := m.(*jobproto.Ack); ok {
			if ack.Error != "" {
				t.Fatalf("ack: %+v", ack)
			}
			break
		}
	}
	d := s.waitPhase(user, id, "ERROR")
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "c1 failed") {
		t.Fatalf("summary: %+v", d.ErrorSummary)
	}
}

func TestLateResultOfAnArchivedJobIsForgotten(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"ABORT"}})
	soon := time.Now().Add(1200 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/destruction", user, url.Values{"DESTRUCTION": {soon}}); status != http.StatusSeeOther {
		t.Fatalf("destruction: %d %s", status, body)
	}
	s.waitPhase(user, id, "ARCHIVED")
	ctx := context.Background()
	if status, _ := c1.Upload(ctx, id, "late.txt", []byte("x")); status != http.StatusConflict {
		t.Fatalf("upload to an archived job: %d, want 409", status)
	}
	for {
		m := nextRunOrAbort(t, c1) // the abort may still be queued
		if _, ok := m.(*jobproto.Abort); ok {
			break
		}
	}
	if ack := finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeAborted, Metrics: json.RawMessage(`{"n":1}`)}); ack.Error != "" {
		t.Fatalf("ack: %+v", ack)
	}
	if d := s.job(user, id, ""); d.Phase != "ARCHIVED" || len(d.Results) != 0 || string(d.JobInfo.Runs[0].Metrics) == `{"n":1}` {
		t.Fatalf("archived job after a late result: %+v", d)
	}
}
