package server

// Standard UWS clients against the real jobs API: UWS XML by default, HTTP
// Basic with an API token as the password, 401 challenges, and pyvo's
// AsyncTAPJob driving jobs end to end (docs/jobs.md, issue 15 items 8-10).

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// uwsGet sends GET path with the given Authorization and Accept headers
// (empty: none) and returns the status, headers and body.
func (s *testServer) uwsGet(path, authorization, accept string) (int, http.Header, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.url+path, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// basicAuth is the Authorization header of HTTP Basic credentials.
func basicAuth(user, password string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, password)
	return req.Header.Get("Authorization")
}

func TestJobAPIBasicAuthAndChallenges(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)

	// A 401 says how to authenticate: Bearer, and Basic on the jobs API.
	status, h, body := s.uwsGet("/api/v1/jobs", "", "")
	challenges := h.Values("WWW-Authenticate")
	if status != http.StatusUnauthorized || errCode(body) != "missing_token" ||
		!slices.ContainsFunc(challenges, func(c string) bool { return strings.HasPrefix(c, "Bearer ") }) ||
		!slices.ContainsFunc(challenges, func(c string) bool { return strings.HasPrefix(c, `Basic realm="`) }) {
		t.Fatalf("no credentials: %d %q %s", status, challenges, body)
	}

	// curl -u anyone:TOKEN, or the token's subject as the user name: the
	// token decides; UWS XML by default.
	for _, name := range []string{"anyone", "alice", ""} {
		status, h, body = s.uwsGet("/api/v1/jobs", basicAuth(name, user), "")
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/xml") || !bytes.Contains(body, []byte("<uws:jobs")) {
			t.Fatalf("Basic %q:TOKEN: %d %s %s", name, status, h.Get("Content-Type"), body)
		}
	}
	// Writes too, with the same scopes as the bearer token.
	req, _ := http.NewRequest("POST", s.url+"/api/v1/jobs", strings.NewReader(url.Values{"action": {"download"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("alice", s.userToken("alice", auth.ScopeJobsRead))
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || errCode(b) != "scope_forbidden" {
		t.Fatalf("Basic with a read-only token creating a job: %d %s", resp.StatusCode, b)
	}

	// Bad Basic credentials are a 401 with the challenges, never a 200.
	for name, header := range map[string]string{
		"wrong token":    basicAuth("alice", "not-a-token"),
		"empty password": basicAuth("alice", ""),
		"another key":    basicAuth("alice", strings.TrimSuffix(user, user[len(user)-4:])+"AAAA"),
	} {
		status, h, body = s.uwsGet("/api/v1/jobs", header, "")
		if status != http.StatusUnauthorized || len(h.Values("WWW-Authenticate")) != 2 || !json.Valid(body) {
			t.Errorf("%s: %d %q %s", name, status, h.Values("WWW-Authenticate"), body)
		}
		if bytes.Contains(body, []byte("not-a-token")) {
			t.Errorf("%s: the answer echoes the credentials: %s", name, body)
		}
	}
	if status, _, body = s.uwsGet("/api/v1/jobs", "Basic !!!", ""); status != http.StatusBadRequest || errCode(body) != "malformed_authorization" {
		t.Errorf("undecodable Basic: %d %s", status, body)
	}

	// A revoked token is refused as Basic credentials too.
	admin := s.adminToken()
	carol := s.userToken("carol", auth.ScopeJobsRead)
	if st, b := s.api("POST", "/api/v1/revocations", admin, `{"kind":"subject","value":"carol","ttl":"1h"}`); st != http.StatusOK {
		t.Fatalf("revoke carol: %d %s", st, b)
	}
	if status, _, body = s.uwsGet("/api/v1/jobs", basicAuth("carol", carol), ""); status != http.StatusForbidden || errCode(body) != "token_revoked" {
		t.Errorf("Basic with a revoked token: %d %s", status, body)
	}

	// Least privilege: the other APIs take no Basic credentials.
	if status, _, _ = s.uwsGet("/api/v1/revocations", "Bearer "+admin, ""); status != http.StatusOK {
		t.Fatalf("control API with a bearer token: %d", status)
	}
	if status, _, body = s.uwsGet("/api/v1/revocations", basicAuth("operator", admin), ""); status < 400 || status >= 500 {
		t.Errorf("control API with Basic credentials: %d %s, want refused", status, body)
	}
}

// uwsSchema is the UWS 1.1 schema in ../shared beside the module.
func uwsSchema(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "specs", "uws", "UWS-1.1.xsd"))
	if err == nil {
		_, err = os.Stat(p)
	}
	if err != nil {
		if os.Getenv(envStrict) == "1" {
			t.Fatalf("UWS schema: %v", err)
		}
		t.Skipf("UWS schema: %v", err)
	}
	return p
}

// validateUWS checks doc against the UWS 1.1 schema with xmllint.
func validateUWS(t *testing.T, doc []byte) {
	t.Helper()
	lint, err := exec.LookPath("xmllint")
	if err != nil {
		if os.Getenv(envStrict) == "1" {
			t.Fatal("xmllint not found (Debian: libxml2-utils)")
		}
		t.Skip("xmllint not found (Debian: libxml2-utils)")
	}
	f := filepath.Join(t.TempDir(), "job.xml")
	if err := os.WriteFile(f, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(lint, "--noout", "--nonet", "--schema", uwsSchema(t), f).CombinedOutput(); err != nil {
		t.Fatalf("does not validate against UWS-1.1.xsd: %v\n%s\n%s", err, out, doc)
	}
}

// uwsJobInfo is what a UWS client reads of a failed job.
type uwsJobInfo struct {
	Phase        string `xml:"http://www.ivoa.net/xml/UWS/v1.0 phase"`
	ErrorSummary struct {
		Type    string `xml:"type,attr"`
		Message string `xml:"http://www.ivoa.net/xml/UWS/v1.0 message"`
	} `xml:"http://www.ivoa.net/xml/UWS/v1.0 errorSummary"`
	JobInfo struct {
		Error string `xml:"urn:switchboard:jobs error"`
		Runs  []struct {
			Agent      string `xml:"agent,attr"`
			State      string `xml:"state,attr"`
			ExitCode   string `xml:"exitCode,attr"`
			Error      string `xml:"error,attr"`
			StdoutTail string `xml:"urn:switchboard:jobs stdoutTail"`
			StderrTail string `xml:"urn:switchboard:jobs stderrTail"`
		} `xml:"urn:switchboard:jobs run"`
	} `xml:"http://www.ivoa.net/xml/UWS/v1.0 jobInfo"`
}

func TestJobUWSXMLByDefaultShowsWhyItFailed(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1", "role=client"), s.agent("c2", "role=client")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1,c2"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	nextRun(t, c2)
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Stdout: "read 5 bytes\n"})
	finish(t, c2, jobproto.Result{Job: id, Outcome: jobproto.OutcomeFailed, ExitCode: 7, Error: "server a refused",
		Stdout: "connecting to a\n", Stderr: "curl: (7) Failed to connect <a> & gave up\n"})
	s.waitPhase(user, id, "ERROR")

	// No Accept header, or */*: UWS XML, valid against the schema.
	for _, accept := range []string{"", "*/*"} {
		status, h, body := s.uwsGet("/api/v1/jobs/"+id, "Bearer "+user, accept)
		if status != http.StatusOK || h.Get("Content-Type") != "application/xml; charset=utf-8" {
			t.Fatalf("Accept %q: %d %s %s", accept, status, h.Get("Content-Type"), body)
		}
		validateUWS(t, body)
		var doc uwsJobInfo
		if err := xml.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Phase != "ERROR" || doc.ErrorSummary.Type == "" || !strings.Contains(doc.ErrorSummary.Message, "c2") ||
			doc.JobInfo.Error != doc.ErrorSummary.Message || len(doc.JobInfo.Runs) != 2 {
			t.Fatalf("why the job failed is not in the document: %+v\n%s", doc, body)
		}
		r := doc.JobInfo.Runs[1]
		if r.Agent != "c2" || r.State != "failed" || r.ExitCode != "7" || r.Error != "server a refused" ||
			r.StdoutTail != "connecting to a\n" || r.StderrTail != "curl: (7) Failed to connect <a> & gave up\n" {
			t.Fatalf("run c2 in jobInfo: %+v", r)
		}
		if doc.JobInfo.Runs[0].StdoutTail != "read 5 bytes\n" {
			t.Fatalf("run c1 in jobInfo: %+v", doc.JobInfo.Runs[0])
		}
	}

	// JSON when asked, with the same tails.
	status, h, body := s.uwsGet("/api/v1/jobs/"+id, "Bearer "+user, "application/json")
	var doc struct {
		JobInfo struct {
			Runs []struct{ Agent, StdoutTail, StderrTail string }
		}
	}
	if status != http.StatusOK || h.Get("Content-Type") != "application/json" || json.Unmarshal(body, &doc) != nil ||
		len(doc.JobInfo.Runs) != 2 || doc.JobInfo.Runs[1].StderrTail != "curl: (7) Failed to connect <a> & gave up\n" {
		t.Fatalf("JSON: %d %s %s", status, h.Get("Content-Type"), body)
	}
}

// pythonWithPyvo returns a python3 that can import pyvo, or skips (fails
// under SWITCHBOARD_TEST_STRICT=1).
func pythonWithPyvo(t *testing.T) string {
	t.Helper()
	var tried []string
	for _, c := range []string{"/usr/bin/python3", "python3"} {
		p, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		if err := exec.Command(p, "-c", "import pyvo.dal.tap").Run(); err == nil {
			return p
		}
		tried = append(tried, p)
	}
	msg := "no python3 can import pyvo (Debian: python3-pyvo); tried " + strings.Join(tried, ", ")
	if os.Getenv(envStrict) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// nextMessage reads the agent's next message, waiting at most d.
func nextMessage(t *testing.T, a *bench.SimAgent, d time.Duration) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, err := a.Next(ctx)
	if err != nil {
		t.Fatalf("agent %s: %v", a.ID, err)
	}
	return m
}

// TestPyvoAsyncTAPJob drives three jobs with pyvo's AsyncTAPJob, whose
// session carries nothing but an Authorization header: one runs, is waited
// for, has its results read and is deleted; one (HTTP Basic) is aborted
// while it executes; one fails and pyvo reads why.
func TestPyvoAsyncTAPJob(t *testing.T) {
	python := pythonWithPyvo(t)
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1", "role=client")
	ids := make([]string, 3)
	urls := make([]string, 3)
	for i := range ids {
		ids[i] = s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}})
		urls[i] = s.url + "/api/v1/jobs/" + ids[i]
	}
	script, err := filepath.Abs(filepath.Join("testdata", "pyvo_async_job.py"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{script, user}, urls...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// The agent's side, job by job as pyvo runs them (python starts
	// slowly: a minute's deadline for each run).
	report := []byte("bytes,5\n")
	run := func(i int) {
		m := nextMessage(t, c1, time.Minute)
		if r, ok := m.(*jobproto.Run); !ok || r.Job != ids[i] {
			t.Fatalf("job %d: expected its run, got %T %+v\nstderr: %s", i, m, m, stderr.String())
		}
		send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: ids[i], StartedAt: time.Now()})
	}
	run(0)
	if status, err := c1.Upload(ctx, ids[0], "report.csv", report); err != nil || status != http.StatusCreated {
		t.Fatalf("upload: %d %v", status, err)
	}
	finish(t, c1, jobproto.Result{Job: ids[0], Outcome: jobproto.OutcomeSucceeded, Stdout: "done\n",
		Metrics: json.RawMessage(`{"bytes":5}`), Files: []jobproto.File{bench.FileOf("report.csv", report)}})
	run(1)
	if m := nextMessage(t, c1, time.Minute); !isAbort(m, ids[1]) {
		t.Fatalf("job 1: expected an abort, got %T %+v", m, m)
	}
	finish(t, c1, jobproto.Result{Job: ids[1], Outcome: jobproto.OutcomeAborted, ExitCode: -1})
	run(2)
	finish(t, c1, jobproto.Result{Job: ids[2], Outcome: jobproto.OutcomeFailed, ExitCode: 2, Error: "server a refused",
		Stderr: "no route to a\n"})

	if err := <-done; err != nil {
		t.Fatalf("pyvo: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var got struct {
		CreatedPhase   string   `json:"created_phase"`
		UWSVersion     string   `json:"uws_version"`
		CompletedPhase string   `json:"completed_phase"`
		ResultIDs      []string `json:"result_ids"`
		Summary        string   `json:"summary"`
		File           string   `json:"file"`
		AfterDelete    string   `json:"after_delete"`
		RunningPhase   string   `json:"running_phase"`
		AbortedPhase   string   `json:"aborted_phase"`
		ErrorPhase     string   `json:"error_phase"`
		ErrorType      *string  `json:"error_type"`
		ErrorMessage   string   `json:"error_message"`
		Raised         bool     `json:"raised"`
		ErrorDetail    string   `json:"error_detail"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("pyvo output: %v\n%s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	if got.CreatedPhase != "PENDING" || got.UWSVersion != "1.1" || got.CompletedPhase != "COMPLETED" ||
		!slices.Equal(got.ResultIDs, []string{"summary", "c1/report.csv"}) ||
		!strings.Contains(got.Summary, "c1,succeeded,0,bytes,5") || got.File != string(report) ||
		!strings.Contains(got.AfterDelete, "404") {
		t.Errorf("completed job as pyvo saw it: %+v", got)
	}
	if got.RunningPhase != "EXECUTING" || got.AbortedPhase != "ABORTED" {
		t.Errorf("aborted job as pyvo saw it: %+v", got)
	}
	if got.ErrorPhase != "ERROR" || got.ErrorType == nil || !got.Raised ||
		!strings.Contains(got.ErrorMessage, "server a refused") || !strings.Contains(got.ErrorDetail, "server a refused") {
		t.Errorf("failed job as pyvo saw it: %+v", got)
	}
	if status, _ := s.api("GET", "/api/v1/jobs/"+ids[0], user, ""); status != http.StatusNotFound {
		t.Errorf("the job pyvo deleted: %d", status)
	}
}

func isAbort(m any, job string) bool {
	a, ok := m.(*jobproto.Abort)
	return ok && a.Job == job
}

// TestJobRunLogStoredAndEnded: each run's output is kept as the result
// logs/{agent}.txt, cut with a marker at --job-max-log, shown with the
// output tails in the job document, and the live log topic ends with an
// end-of-job message.
func TestJobRunLogStoredAndEnded(t *testing.T) {
	const maxLog = 300
	s := startServer(t, func(cfg *Config, _ *Deps) { cfg.Jobs.MaxLogBytes = maxLog })
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1", "role=client"), s.agent("c2", "role=client")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1,c2"}, "server": {"a"}})
	logConn := s.dial("jobs/"+id+"/log", s.sign(s.claims("jobs/"+id+"/log", auth.ScopeRead)))
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"RUN"}}); status != http.StatusSeeOther {
		t.Fatalf("RUN: %d %s", status, body)
	}
	nextRun(t, c1)
	nextRun(t, c2)
	for _, a := range []*bench.SimAgent{c1, c2} {
		send(t, a, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	}
	send(t, c1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"line 1", "line 2"}})
	send(t, c1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStderr, Lines: []string{"warning: slow"}})
	var many []string
	for i := range 40 { // well past maxLog
		many = append(many, "more output "+strings.Repeat("x", i%7))
	}
	send(t, c2, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: many})
	// While the run goes on, a late viewer reads what was kept so far.
	c1SoFar := "[stdout] line 1\n[stdout] line 2\n[stderr] warning: slow\n"
	wait.For(t, "c1's log so far", func() bool {
		status, h, body := s.uwsGet("/api/v1/jobs/"+id+"/runs/c1/log", "Bearer "+user, "")
		return status == http.StatusOK && h.Get("X-Log-Complete") == "false" && string(body) == c1SoFar
	})
	if status, _, body := s.uwsGet("/api/v1/jobs/"+id+"/runs/c9/log", "Bearer "+user, ""); status != http.StatusNotFound || errCode(body) != "run_not_found" {
		t.Fatalf("log of no run: %d %s", status, body)
	}
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Stdout: "line 1\nline 2\n", Stderr: "warning: slow\n"})
	finish(t, c2, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Stdout: strings.Join(many[30:], "\n")})
	d := s.waitPhase(user, id, "COMPLETED")
	var ids []string
	for _, r := range d.Results {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"summary", "logs/c1.txt", "logs/c2.txt"}) {
		t.Fatalf("results %v, want the summary and both logs", ids)
	}

	// The whole log of c1, both streams in order.
	status, h, body := s.uwsGet("/api/v1/jobs/"+id+"/results/logs/c1.txt", "Bearer "+user, "")
	if want := "[stdout] line 1\n[stdout] line 2\n[stderr] warning: slow\n"; status != http.StatusOK || string(body) != want ||
		!strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("log of c1: %d %s %q, want %q", status, h.Get("Content-Type"), body, want)
	}
	if status, h, body := s.uwsGet("/api/v1/jobs/"+id+"/runs/c1/log", "Bearer "+user, ""); status != http.StatusOK ||
		h.Get("X-Log-Complete") != "true" || string(body) != c1SoFar {
		t.Fatalf("c1's log once it ended: %d %v %q", status, h, body)
	}
	// c2's, cut at maxLog with a marker.
	status, _, body = s.uwsGet("/api/v1/jobs/"+id+"/results/logs/c2.txt", "Bearer "+user, "")
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	kept := strings.Join(lines[:len(lines)-1], "\n") + "\n"
	if status != http.StatusOK || !strings.HasPrefix(string(body), "[stdout] more output \n") || len(kept) > maxLog ||
		!strings.HasPrefix(lines[len(lines)-1], "[switchboard] log cut here") || len(lines) > len(many) {
		t.Fatalf("log of c2: %d %q", status, body)
	}

	// The tails are in the job document (JSON here; XML in
	// TestJobUWSXMLByDefaultShowsWhyItFailed).
	_, _, body = s.uwsGet("/api/v1/jobs/"+id, "Bearer "+user, "application/json")
	if !bytes.Contains(body, []byte(`"stderrTail":"warning: slow\n"`)) {
		t.Fatalf("tails missing from the job document: %s", body)
	}

	// The live log: the lines as they came, a message per message of the
	// agent ({"agent","stream","seq","lines"}), then the end of the job.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	for range 100 {
		_, msg, err := logConn.Read(ctx)
		if err != nil {
			t.Fatalf("log topic after %d messages: %v", len(got), err)
		}
		got = append(got, string(msg))
		if strings.Contains(string(msg), `"event"`) {
			break
		}
	}
	if len(got) != 3+1 || got[len(got)-1] != `{"event":"end","phase":"COMPLETED"}` {
		t.Fatalf("log topic: %d messages, last %q", len(got), got[len(got)-1])
	}
	// Each run's lines are numbered from 1 (seq of a message's first line),
	// as in its log so far.
	seqs := map[string][]int64{}
	for _, m := range got[:len(got)-1] {
		var l struct {
			Agent string
			Seq   int64
			Lines []string
		}
		if err := json.Unmarshal([]byte(m), &l); err != nil {
			t.Fatal(err)
		}
		for i := range l.Lines {
			seqs[l.Agent] = append(seqs[l.Agent], l.Seq+int64(i))
		}
	}
	if !slices.Equal(seqs["c1"], []int64{1, 2, 3}) || len(seqs["c2"]) != len(many) || seqs["c2"][len(many)-1] != int64(len(many)) {
		t.Fatalf("seq of the live lines: %v", seqs)
	}
}

// TestJobRunLogOfAbortedRun: a run still going when its job is aborted has
// its log stored when the job ends; lines after that are dropped, and its
// late result does not replace the log.
func TestJobRunLogOfAbortedRun(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1", "role=client")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	send(t, c1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"before the abort"}})
	wait.For(t, "the line kept", func() bool {
		_, _, body := s.uwsGet("/api/v1/jobs/"+id+"/runs/c1/log", "Bearer "+user, "")
		return string(body) == "[stdout] before the abort\n"
	})
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"ABORT"}}); status != http.StatusSeeOther {
		t.Fatalf("ABORT: %d %s", status, body)
	}
	if m := nextMessage(t, c1, 5*time.Second); !isAbort(m, id) {
		t.Fatalf("expected an abort, got %T %+v", m, m)
	}
	wait.For(t, "the log stored at the job's end", func() bool {
		status, h, body := s.uwsGet("/api/v1/jobs/"+id+"/results/logs/c1.txt", "Bearer "+user, "")
		return status == http.StatusOK && string(body) == "[stdout] before the abort\n" && strings.HasPrefix(h.Get("Content-Type"), "text/plain")
	})
	send(t, c1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStderr, Lines: []string{"terminated"}})
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeAborted, ExitCode: -1, Stderr: "terminated\n"})
	status, h, body := s.uwsGet("/api/v1/jobs/"+id+"/runs/c1/log", "Bearer "+user, "")
	if status != http.StatusOK || h.Get("X-Log-Complete") != "true" || string(body) != "[stdout] before the abort\n" {
		t.Fatalf("log after the late result: %d %v %q", status, h, body)
	}
}
