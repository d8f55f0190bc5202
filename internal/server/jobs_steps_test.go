package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
)

// serveStatsAction is what a data server's agent declares: it reports
// what the server served during the test.
func serveStatsAction() jobproto.Action {
	return jobproto.Action{Name: "serve-stats", Timeout: jobproto.Duration(time.Minute)}
}

// serverAgent connects a simulated agent declaring serve-stats.
func (s *testServer) serverAgent(id string, labels ...string) *bench.SimAgent {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := bench.DialAgent(ctx, s.url, s.agentToken(id, labels...),
		jobproto.Hello{Agent: id, Labels: labels, Actions: []jobproto.Action{serveStatsAction()}}, nil)
	if err != nil {
		s.t.Fatalf("agent %s: %v", id, err)
	}
	s.t.Cleanup(func() { a.CloseNow() })
	return a
}

// postJSON sends a JSON request without following redirects.
func (s *testServer) postJSON(path, tok, body string) (int, string, http.Header) {
	s.t.Helper()
	req, _ := http.NewRequest("POST", s.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := noRedirect.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// createJSONJob creates a job from a JSON body and returns its id.
func (s *testServer) createJSONJob(tok, body string) string {
	s.t.Helper()
	status, b, h := s.postJSON("/api/v1/jobs", tok, body)
	if status != http.StatusSeeOther {
		s.t.Fatalf("create job: %d %s", status, b)
	}
	return strings.TrimPrefix(h.Get("Location"), s.url+"/api/v1/jobs/")
}

// stepsDoc is the JSON document of a test of several steps.
type stepsDoc struct {
	Phase        string `json:"phase"`
	ErrorSummary *struct {
		Message string `json:"message"`
	} `json:"errorSummary"`
	Results []struct {
		ID string `json:"id"`
	} `json:"results"`
	JobInfo struct {
		Runs []struct {
			Agent, Name, Job, State, Step string
		} `json:"runs"`
		Steps []struct {
			Name, Job, Phase, Action, Targets, After, When string
		} `json:"steps"`
	} `json:"jobInfo"`
}

func (s *testServer) stepsJob(tok, id string) stepsDoc {
	s.t.Helper()
	status, b := s.api("GET", "/api/v1/jobs/"+id, tok, "")
	var d stepsDoc
	if status != http.StatusOK || json.Unmarshal(b, &d) != nil {
		s.t.Fatalf("GET job %s: %d %s", id, status, b)
	}
	return d
}

// stepPhases maps each step of a test to its phase.
func (d stepsDoc) stepPhases() map[string]string {
	out := map[string]string{}
	for _, st := range d.JobInfo.Steps {
		out[st.Name] = st.Phase
	}
	return out
}

// TestJobStepsConcurrent: one request runs serve-stats on the servers
// while download runs on the clients (a matrix over the two servers);
// both steps start at once; the test completes when both have; its
// jobInfo lists the steps and names each run's step; its results cover
// both steps (the summary, the export's step column, the matrix); and
// the matrix result checked against the servers' bytes_served highlights
// the one cell a server counted differently.
func TestJobStepsConcurrent(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1", "role=client"), s.agent("c2", "role=client")
	s1, s2 := s.serverAgent("s1", "role=server"), s.serverAgent("s2", "role=server")
	servers := []string{"s1.example.org", "s2.example.org"}
	bytesRead := func(client, server string) int64 {
		return int64(1000*(slices.Index([]string{"c1", "c2"}, client)+1) + slices.Index(servers, server) + 1)
	}

	id := s.createJSONJob(user, `{"runId":"w49","phase":"RUN","labels":["campaign=w49"],"steps":[
		{"name":"serve","action":"serve-stats","targets":"role=server"},
		{"name":"download","action":"download","targets":"role=client","parameters":{"server":["s1.example.org","s2.example.org"],"count":"2"}}]}`)

	// Both steps run at the same time: each server and each client has
	// a run before any has finished (a client runs one download at once).
	serveRuns := map[string]*jobproto.Run{"s1": nextRun(t, s1), "s2": nextRun(t, s2)}
	for agent, r := range serveRuns {
		if r.Job != jobs.StepID(id, 0) || r.Action != "serve-stats" {
			t.Fatalf("server %s: run %+v", agent, r)
		}
	}
	clients := map[string]*bench.SimAgent{"c1": c1, "c2": c2}
	firstRuns := map[string]*jobproto.Run{"c1": nextRun(t, c1), "c2": nextRun(t, c2)}
	d := s.stepsJob(user, id)
	if d.Phase != "EXECUTING" || len(d.JobInfo.Steps) != 2 || d.stepPhases()["serve"] != "EXECUTING" || d.stepPhases()["download"] != "EXECUTING" {
		t.Fatalf("while both steps run: %+v", d)
	}
	for name, c := range clients {
		var got []string
		for i := range servers {
			r := firstRuns[name]
			if i > 0 {
				r = nextRun(t, c)
			}
			if !strings.HasPrefix(r.Job, jobs.StepID(id, 1)+"-") || r.Action != "download" || r.Params["count"] != "2" {
				t.Fatalf("client %s: run %+v", name, r)
			}
			got = append(got, r.Params["server"])
			finish(t, c, jobproto.Result{Job: r.Job, Outcome: jobproto.OutcomeSucceeded,
				Metrics: json.RawMessage(fmt.Sprintf(`{"bytes_read": %d}`, bytesRead(name, r.Params["server"])))})
		}
		if slices.Sort(got); !slices.Equal(got, servers) {
			t.Fatalf("client %s ran %v", name, got)
		}
	}
	// Each server reports what it served to each client; s2 counts 7
	// bytes fewer for c2 than c2 read.
	for i, agent := range []*bench.SimAgent{s1, s2} {
		name, server := fmt.Sprint("s", i+1), servers[i]
		served2 := bytesRead("c2", server)
		if name == "s2" {
			served2 -= 7
		}
		finish(t, agent, jobproto.Result{Job: serveRuns[name].Job, Outcome: jobproto.OutcomeSucceeded,
			Metrics: json.RawMessage(fmt.Sprintf(`{"server": %q, "bytes_served": {"c1": %d, "c2": %d}}`,
				server, bytesRead("c1", server), served2))})
	}
	wait.For(t, "the test completed", func() bool {
		d = s.stepsJob(user, id)
		return d.Phase == "COMPLETED"
	})
	want := []struct{ Name, Job, Phase, Action, Targets, After, When string }{
		{"serve", jobs.StepID(id, 0), "COMPLETED", "serve-stats", "role=server", "", ""},
		{"download", jobs.StepID(id, 1), "COMPLETED", "download", "role=client", "", ""},
	}
	for i, st := range d.JobInfo.Steps {
		if i >= len(want) || st != want[i] {
			t.Fatalf("steps: %+v, want %+v", d.JobInfo.Steps, want)
		}
	}
	if len(d.JobInfo.Runs) != 6 {
		t.Fatalf("runs: %+v", d.JobInfo.Runs)
	}
	for _, r := range d.JobInfo.Runs {
		wantStep := map[bool]string{true: "serve", false: "download"}[strings.HasPrefix(r.Agent, "s")]
		if r.Step != wantStep || r.State != "succeeded" || !strings.HasPrefix(r.Name, r.Agent+" [step="+wantStep) {
			t.Fatalf("run: %+v", r)
		}
	}
	var ids []string
	for _, r := range d.Results {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"summary", "matrix.json", "matrix.csv"}) {
		t.Fatalf("results: %v", ids)
	}

	// The long-format export has the step of each row.
	status, b := s.api("GET", "/api/v1/export?runid=w49&format=json", user, "")
	if status != http.StatusOK {
		t.Fatalf("export: %d %s", status, b)
	}
	var export struct {
		Rows []struct{ Job, Step, Agent string }
	}
	if err := json.Unmarshal(b, &export); err != nil {
		t.Fatalf("export: %v: %s", err, b)
	}
	steps := map[string]string{} // agent → step
	for _, row := range export.Rows {
		if row.Job == id {
			steps[row.Agent] = row.Step
		}
	}
	if fmt.Sprint(steps) != "map[c1:download c2:download s1:serve s2:serve]" {
		t.Fatalf("export steps %v: %s", steps, b)
	}

	// The matrix: clients × (step, server), checked against the servers.
	status, b = s.api("GET", "/api/v1/jobs/"+id+"/results/matrix.json?metric=bytes_read&against=bytes_served&by=server", user, "")
	var m struct {
		Parameters []string
		Columns    []struct{ Job, Label string }
		Rows       []struct {
			Agent    string
			Cells    []*json.Number
			Against  []*json.Number
			Disagree []bool
		}
		Against struct {
			Metric, By    string
			Disagreements int
		}
	}
	if status != http.StatusOK || json.Unmarshal(b, &m) != nil {
		t.Fatalf("matrix.json: %d %s", status, b)
	}
	if !slices.Equal(m.Parameters, []string{"step", "server"}) || len(m.Columns) != 3 || m.Columns[0].Label != "step=serve" ||
		m.Columns[1].Label != "step=download, server=s1.example.org" || len(m.Rows) != 4 ||
		m.Against.Metric != "bytes_served" || m.Against.By != "server" || m.Against.Disagreements != 1 {
		t.Fatalf("matrix.json: %s", b)
	}
	for _, row := range m.Rows[:2] { // c1, c2
		for c, server := range servers {
			cell, served := row.Cells[c+1], row.Against[c+1]
			wantServed := bytesRead(row.Agent, server)
			if row.Agent == "c2" && server == "s2.example.org" {
				wantServed -= 7
			}
			if cell == nil || served == nil || cell.String() != fmt.Sprint(bytesRead(row.Agent, server)) || served.String() != fmt.Sprint(wantServed) {
				t.Errorf("%s × %s: cell %v against %v", row.Agent, server, cell, served)
			}
			if row.Disagree[c+1] != (wantServed != bytesRead(row.Agent, server)) {
				t.Errorf("%s × %s: disagree %v", row.Agent, server, row.Disagree[c+1])
			}
		}
	}
	for _, bad := range []string{"against=bytes_served", "by=server", "against=a&against=b&by=server"} {
		if status, b := s.api("GET", "/api/v1/jobs/"+id+"/results/matrix.json?"+bad, user, ""); status != http.StatusBadRequest {
			t.Errorf("matrix.json?%s: %d %s", bad, status, b)
		}
	}

	// A step's job is part of the test: changed only through it.
	if status, _, _ := s.form("POST", "/api/v1/jobs/"+jobs.StepID(id, 0)+"/phase", user, url.Values{"PHASE": {"ABORT"}}); status != http.StatusForbidden {
		t.Errorf("ABORT of a step's job: %d, want 403", status)
	}
	// The list shows the test, not its steps.
	status, b = s.api("GET", "/api/v1/jobs?runid=w49", user, "")
	if status != http.StatusOK || !strings.Contains(string(b), `"`+id+`"`) || strings.Contains(string(b), jobs.StepID(id, 0)) {
		t.Errorf("list: %d %s", status, b)
	}
}

// TestJobStepsOrdered: a step after another "finished" starts only once
// that one has completed, one after it "running" as soon as it runs; a
// saved definition with steps runs with a STEP.PARAMETER override.
func TestJobStepsOrdered(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1", "role=client"), s.agent("c2", "role=probe")
	s1 := s.serverAgent("s1", "role=server")

	status, b := s.api("PUT", "/api/v1/definitions/ordered", user, `{"labels":["campaign=w49"],"steps":[
		{"name":"serve","action":"serve-stats","targets":"s1"},
		{"name":"probe","action":"download","targets":"c2","parameters":{"server":"p.example.org"},"after":"serve","when":"running"},
		{"name":"download","action":"download","targets":"c1","parameters":{"server":"a.example.org"},"after":"serve"}]}`)
	if status != http.StatusCreated {
		t.Fatalf("PUT definition: %d %s", status, b)
	}
	status, body, h := s.form("POST", "/api/v1/definitions/ordered/jobs", user,
		url.Values{"PHASE": {"RUN"}, "download.server": {"b.example.org"}})
	if status != http.StatusSeeOther {
		t.Fatalf("run definition: %d %s", status, body)
	}
	id := strings.TrimPrefix(h.Get("Location"), s.url+"/api/v1/jobs/")

	serve := nextRun(t, s1)
	probe := nextRun(t, c2) // serve is running: probe starts
	if serve.Job != jobs.StepID(id, 0) || probe.Job != jobs.StepID(id, 1) || probe.Params["server"] != "p.example.org" {
		t.Fatalf("runs: %+v %+v", serve, probe)
	}
	d := s.stepsJob(user, id)
	if p := d.stepPhases(); p["serve"] != "EXECUTING" || p["probe"] != "EXECUTING" || p["download"] != "PENDING" {
		t.Fatalf("while serve runs: %v", p)
	}
	if d.JobInfo.Steps[2].After != "serve" || d.JobInfo.Steps[2].When != "finished" || d.JobInfo.Steps[1].When != "running" {
		t.Fatalf("steps: %+v", d.JobInfo.Steps)
	}
	finish(t, s1, jobproto.Result{Job: serve.Job, Outcome: jobproto.OutcomeSucceeded})
	download := nextRun(t, c1) // serve completed: download starts, with the override
	if download.Job != jobs.StepID(id, 2) || download.Params["server"] != "b.example.org" {
		t.Fatalf("download run: %+v", download)
	}
	finish(t, c1, jobproto.Result{Job: download.Job, Outcome: jobproto.OutcomeSucceeded})
	if p := s.stepsJob(user, id).stepPhases(); p["download"] != "COMPLETED" && p["download"] != "EXECUTING" {
		t.Fatalf("after download: %v", p)
	}
	if s.stepsJob(user, id).Phase != "EXECUTING" {
		t.Fatal("the test ended while probe still runs")
	}
	finish(t, c2, jobproto.Result{Job: probe.Job, Outcome: jobproto.OutcomeSucceeded})
	s.waitPhase(user, id, "COMPLETED")

	// Overrides must name a step; the definition's steps cannot change.
	for _, v := range []url.Values{{"server": {"x"}}, {"nope.server": {"x"}}, {"TARGETS": {"c1"}}} {
		if status, body, _ := s.form("POST", "/api/v1/definitions/ordered/jobs", user, v); status != http.StatusBadRequest {
			t.Errorf("run definition with %v: %d %s", v, status, body)
		}
	}
}

// TestJobStepsFailure: a step that fails fails the test: the step that
// was to follow it never starts (ABORTED), and the test is ERROR naming
// the failed step. An aborted test aborts its steps.
func TestJobStepsFailure(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	s.agent("c1", "role=client")
	s1 := s.serverAgent("s1", "role=server")
	id := s.createJSONJob(user, `{"phase":"RUN","steps":[
		{"name":"serve","action":"serve-stats","targets":"s1"},
		{"name":"download","action":"download","targets":"c1","parameters":{"server":"a.example.org"},"after":"serve","when":"finished"}]}`)
	serve := nextRun(t, s1)
	finish(t, s1, jobproto.Result{Job: serve.Job, Outcome: jobproto.OutcomeFailed, ExitCode: 3})
	s.waitPhase(user, id, "ERROR")
	d := s.stepsJob(user, id)
	if p := d.stepPhases(); p["serve"] != "ERROR" || p["download"] != "ABORTED" {
		t.Fatalf("steps: %v", p)
	}
	if d.ErrorSummary == nil || !strings.Contains(d.ErrorSummary.Message, "step serve ERROR") {
		t.Fatalf("error summary: %+v", d.ErrorSummary)
	}

	// ABORT of the test reaches its steps, started or not.
	id = s.createJSONJob(user, `{"phase":"RUN","steps":[
		{"name":"serve","action":"serve-stats","targets":"s1"},
		{"name":"download","action":"download","targets":"c1","parameters":{"server":"a.example.org"},"after":"serve"}]}`)
	nextRun(t, s1)
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"ABORT"}}); status != http.StatusSeeOther {
		t.Fatalf("ABORT: %d %s", status, body)
	}
	wait.For(t, "every step aborted", func() bool {
		d = s.stepsJob(user, id)
		p := d.stepPhases()
		return d.Phase == "ABORTED" && p["serve"] == "ABORTED" && p["download"] == "ABORTED"
	})
}

// TestJobStepsRefused: a bad test is 400 naming what is wrong, and
// nothing is stored.
func TestJobStepsRefused(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	s.agent("c1", "role=client")
	s.serverAgent("s1", "role=server")
	ok := `{"name":"serve","action":"serve-stats","targets":"s1"}`
	for _, c := range []struct{ body, want string }{
		{`{"steps":[` + ok + `,` + ok + `]}`, "step serve: the name is given twice"},
		{`{"steps":[{"name":"dl","action":"download","targets":"c1","parameters":{"server":"a"},"after":"serve"},` + ok + `]}`, `names no earlier step`},
		{`{"steps":[` + ok + `,{"name":"dl","action":"download","targets":"c1","parameters":{"server":"a"},"after":"serve","when":"soon"}]}`, "when must be"},
		{`{"steps":[` + ok + `,{"name":"dl","action":"download","targets":"c1"}]}`, "step dl: "},
		{`{"steps":[` + ok + `,{"name":"dl","action":"download","targets":"c1","parameters":{"server":["a","a"]}}]}`, "step dl: parameter server"},
		{`{"steps":[{"name":"bad name","action":"serve-stats","targets":"s1"}]}`, "step 1: name"},
		{`{"action":"download","targets":"c1","steps":[` + ok + `]}`, "in each step"},
	} {
		status, b, _ := s.postJSON("/api/v1/jobs", user, c.body)
		if status != http.StatusBadRequest || !strings.Contains(b, c.want) {
			t.Errorf("%s: %d %s, want 400 with %q", c.body, status, b, c.want)
		}
	}
	if status, b := s.api("GET", "/api/v1/jobs", user, ""); status != http.StatusOK || strings.Contains(string(b), `"jobId"`) {
		t.Errorf("jobs stored after refusals: %s", b)
	}
}

// TestJobStepsAfterCrash: a test left EXECUTING by a crash — one step
// completed, the next (after it) never started — goes on when the hub
// starts again: the waiting step runs and the test completes.
func TestJobStepsAfterCrash(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	acts, _ := json.Marshal([]jobproto.Action{downloadAction()})
	if err := st.PutAgent(ctx, store.Agent{ID: "c1", Actions: acts, FirstSeen: time.Now(), LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	steps := []store.Step{{Name: "first", Job: jobs.StepID("t", 0)},
		{Name: "second", Job: jobs.StepID("t", 1), After: "first", When: store.StepWhenFinished}}
	for _, j := range []store.Job{
		{ID: "t", Phase: store.PhaseExecuting, Steps: steps, StartedAt: time.Now()},
		{ID: steps[0].Job, Parent: "t", Action: "download", Targets: "c1", Phase: store.PhaseCompleted,
			Params: map[string]string{"server": "a", "count": "1"}, StartedAt: time.Now(), EndedAt: time.Now()},
		{ID: steps[1].Job, Parent: "t", Action: "download", Targets: "c1", Phase: store.PhasePending,
			Params: map[string]string{"server": "b", "count": "1"}},
	} {
		j.Owner, j.CreatedAt = "alice", time.Now()
		if err := st.CreateJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t, func(c *Config, d *Deps) { d.Store = st })
	user := s.userToken("alice", auth.ScopeJobsRead)
	c1 := s.agent("c1")
	r := nextRun(t, c1)
	if r.Job != steps[1].Job || r.Params["server"] != "b" {
		t.Fatalf("run after the restart: %+v", r)
	}
	finish(t, c1, jobproto.Result{Job: r.Job, Outcome: jobproto.OutcomeSucceeded})
	wait.For(t, "the test completed", func() bool { return s.stepsJob(user, "t").Phase == "COMPLETED" })
}
