package server

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// matrixDoc is the JSON job document of a matrix job.
type matrixDoc struct {
	JobID        string                     `json:"jobId"`
	Phase        string                     `json:"phase"`
	Parameters   map[string]json.RawMessage `json:"parameters"`
	ErrorSummary *struct {
		Message string `json:"message"`
	} `json:"errorSummary"`
	Results []struct {
		ID string `json:"id"`
	} `json:"results"`
	JobInfo struct {
		Runs []struct {
			Agent       string            `json:"agent"`
			Name        string            `json:"name"`
			Job         string            `json:"job"`
			State       string            `json:"state"`
			Combination map[string]string `json:"combination"`
		} `json:"runs"`
		Labels []string `json:"labels"`
		Matrix []struct {
			Name   string
			Values []string
		} `json:"matrix"`
		Combinations []struct {
			Job, Label, Phase string
			Parameters        map[string]string
		} `json:"combinations"`
	} `json:"jobInfo"`
}

func (s *testServer) matrixJob(tok, id string) matrixDoc {
	s.t.Helper()
	status, b := s.api("GET", "/api/v1/jobs/"+id, tok, "")
	if status != http.StatusOK {
		s.t.Fatalf("GET job %s: %d %s", id, status, b)
	}
	var d matrixDoc
	if err := json.Unmarshal(b, &d); err != nil {
		s.t.Fatalf("job document: %v: %s", err, b)
	}
	return d
}

// TestJobMatrix: one request (SERVER given three times) launches every
// client downloading from every server: one run per agent per
// combination, each agent receiving plain values; the matrix job
// completes when every combination has; the matrix result shows agents ×
// servers with totals (JSON and CSV); the job list filters by RUNID and
// LABEL and shows no child; the long-format export has a row per run;
// the children refuse changes.
func TestJobMatrix(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1, c2 := s.agent("c1", "role=client"), s.agent("c2", "role=client")
	servers := []string{"s1.example.org", "s2.example.org", "s3.example.org"}
	bytesRead := func(agent, server string) int64 {
		return int64(1000*(strings.Index("c1c2", agent)/2+1) + slices.Index(servers, server) + 1)
	}

	other := s.createJob(user, url.Values{"ACTION": {"download"}, "TARGETS": {"c1"}, "SERVER": {"x.example.org"}, "RUNID": {"w47"}})
	id := s.createJob(user, url.Values{"ACTION": {"download"}, "TARGETS": {"role=client"}, "SERVER": servers,
		"COUNT": {"2"}, "RUNID": {"w48"}, "LABEL": {"campaign=w48", "site=UNL"}, "PHASE": {"RUN"}})

	for _, a := range []*struct {
		id  string
		run func() *jobproto.Run
		fin func(jobproto.Result)
	}{
		{"c1", func() *jobproto.Run { return nextRun(t, c1) }, func(r jobproto.Result) { finish(t, c1, r) }},
		{"c2", func() *jobproto.Run { return nextRun(t, c2) }, func(r jobproto.Result) { finish(t, c2, r) }},
	} {
		var got []string
		for range servers {
			r := a.run()
			if !strings.HasPrefix(r.Job, id+"-") || r.Params["count"] != "2" || !slices.Contains(servers, r.Params["server"]) {
				t.Fatalf("agent %s: run %+v", a.id, r)
			}
			got = append(got, r.Params["server"])
			a.fin(jobproto.Result{Job: r.Job, Outcome: jobproto.OutcomeSucceeded,
				Metrics: json.RawMessage(fmt.Sprintf(`{"bytes_read": %d, "note": "=cmd"}`, bytesRead(a.id, r.Params["server"])))})
		}
		slices.Sort(got)
		if !slices.Equal(got, servers) {
			t.Fatalf("agent %s ran servers %v, want each of %v once", a.id, got, servers)
		}
	}
	var d matrixDoc
	wait.For(t, "the matrix job completed", func() bool {
		d = s.matrixJob(user, id)
		return d.Phase == "COMPLETED"
	})
	if string(d.Parameters["server"]) != `["s1.example.org","s2.example.org","s3.example.org"]` || string(d.Parameters["count"]) != `"2"` {
		t.Fatalf("parameters: %s %s", d.Parameters["server"], d.Parameters["count"])
	}
	if len(d.JobInfo.Runs) != 6 || len(d.JobInfo.Combinations) != 3 || !slices.Equal(d.JobInfo.Labels, []string{"campaign=w48", "site=UNL"}) {
		t.Fatalf("jobInfo: %+v", d.JobInfo)
	}
	for i, c := range d.JobInfo.Combinations {
		if c.Job != jobs.ChildID(id, i) || c.Phase != "COMPLETED" || c.Parameters["server"] != servers[i] || c.Label != "server="+servers[i] {
			t.Fatalf("combination %d: %+v", i, c)
		}
	}
	for _, r := range d.JobInfo.Runs {
		if r.State != "succeeded" || r.Name != r.Agent+" [server="+r.Combination["server"]+"]" || !strings.HasPrefix(r.Job, id+"-") {
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

	// The matrix result, agents × servers with totals.
	status, b := s.api("GET", "/api/v1/jobs/"+id+"/results/matrix.json?metric=bytes_read", user, "")
	var m struct {
		Metric     string
		Parameters []string
		Columns    []struct {
			Job, Label string
			Total      json.Number
		}
		Rows []struct {
			Agent string
			Cells []json.Number
			Total json.Number
		}
		Total json.Number
	}
	if status != 200 || json.Unmarshal(b, &m) != nil {
		t.Fatalf("matrix.json: %d %s", status, b)
	}
	if m.Metric != "bytes_read" || !slices.Equal(m.Parameters, []string{"server"}) || len(m.Columns) != 3 || len(m.Rows) != 2 ||
		m.Rows[0].Agent != "c1" || m.Rows[1].Agent != "c2" {
		t.Fatalf("matrix.json: %s", b)
	}
	var grand int64
	for r, row := range m.Rows {
		var rowSum int64
		for c, cell := range row.Cells {
			want := bytesRead(row.Agent, servers[c])
			if cell.String() != fmt.Sprint(want) {
				t.Errorf("cell %s × %s = %s, want %d", row.Agent, servers[c], cell, want)
			}
			rowSum += want
		}
		if row.Total.String() != fmt.Sprint(rowSum) {
			t.Errorf("row %d total %s, want %d", r, row.Total, rowSum)
		}
		grand += rowSum
	}
	for c, col := range m.Columns {
		if want := bytesRead("c1", servers[c]) + bytesRead("c2", servers[c]); col.Total.String() != fmt.Sprint(want) {
			t.Errorf("column %s total %s, want %d", col.Label, col.Total, want)
		}
	}
	if m.Total.String() != fmt.Sprint(grand) {
		t.Errorf("total %s, want %d", m.Total, grand)
	}
	status, b = s.api("GET", "/api/v1/jobs/"+id+"/results/matrix.csv", user, "") // bytes_read is the default
	want := "agent,s1.example.org,s2.example.org,s3.example.org,total\n" +
		"c1,1001,1002,1003,3006\n" +
		"c2,2001,2002,2003,6006\n" +
		"total,3002,3004,3006,9012\n"
	if status != 200 || string(b) != want {
		t.Fatalf("matrix.csv: %d\n%s\nwant\n%s", status, b, want)
	}
	if status, b = s.api("GET", "/api/v1/jobs/"+id+"/results/matrix.json?metric=a&metric=b", user, ""); status != http.StatusBadRequest ||
		!strings.Contains(string(b), "metric") {
		t.Fatalf("two metrics: %d %s", status, b)
	}

	// The list filters by RUNID and LABEL, and shows no child.
	list := func(query string) []string {
		t.Helper()
		status, b := s.api("GET", "/api/v1/jobs?"+query, user, "")
		var l struct{ Jobs []struct{ JobID string } }
		if status != 200 || json.Unmarshal(b, &l) != nil {
			t.Fatalf("list %s: %d %s", query, status, b)
		}
		var out []string
		for _, j := range l.Jobs {
			out = append(out, j.JobID)
		}
		return out
	}
	if got := list(""); !slices.Equal(got, []string{other, id}) {
		t.Fatalf("list: %v, want %v (no child)", got, []string{other, id})
	}
	if got := list("RUNID=w48"); !slices.Equal(got, []string{id}) {
		t.Fatalf("RUNID=w48: %v", got)
	}
	if got := list("runid=w47"); !slices.Equal(got, []string{other}) {
		t.Fatalf("runid=w47: %v", got)
	}
	if got := list("LABEL=site%3DUNL"); !slices.Equal(got, []string{id}) {
		t.Fatalf("LABEL=site=UNL: %v", got)
	}
	if got := list("LABEL=site%3DUN"); len(got) != 0 {
		t.Fatalf("LABEL=site=UN: %v", got)
	}

	// The long-format export of the campaign: a row per run and metric.
	req, _ := http.NewRequest("GET", s.url+"/api/v1/export?RUNID=w48&FORMAT=csv", nil)
	req.Header.Set("Authorization", "Bearer "+user)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	resp.Body.Close()
	if err != nil || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" {
		t.Fatalf("export: %v %s", err, resp.Header.Get("Content-Type"))
	}
	if len(rows) != 1+6*2 || !slices.Equal(rows[0], []string{"job", "run_id", "definition", "step", "agent", "parameters", "state", "metric", "value"}) {
		t.Fatalf("export: %q", rows)
	}
	found := 0
	for _, r := range rows[1:] {
		if r[0] != id || r[1] != "w48" || r[3] != "download" || r[6] != "succeeded" {
			t.Fatalf("export row %q", r)
		}
		var ps map[string]string
		if err := json.Unmarshal([]byte(r[5]), &ps); err != nil || ps["count"] != "2" {
			t.Fatalf("export row parameters %q", r[5])
		}
		switch r[7] {
		case "bytes_read":
			if r[8] != fmt.Sprint(bytesRead(r[4], ps["server"])) {
				t.Fatalf("export row %q", r)
			}
			found++
		case "note":
			if r[8] != "'=cmd" { // made inert for spreadsheets
				t.Fatalf("export text cell %q", r[8])
			}
		default:
			t.Fatalf("export row %q", r)
		}
	}
	if found != 6 {
		t.Fatalf("export: %d bytes_read rows, want 6", found)
	}
	status, b = s.api("GET", "/api/v1/export?LABEL=campaign%3Dw48&FORMAT=json", user, "")
	var ej struct {
		Rows []struct {
			Job, Agent string
			Metric     *string
			Value      json.RawMessage
		}
	}
	if status != 200 || json.Unmarshal(b, &ej) != nil || len(ej.Rows) != 12 || ej.Rows[0].Job != id {
		t.Fatalf("export json: %d %s", status, b)
	}

	// A child is changed through its matrix job only.
	child := jobs.ChildID(id, 0)
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+child, user, url.Values{"ACTION": {"DELETE"}}); status != http.StatusForbidden ||
		!strings.Contains(body, "matrix_child") {
		t.Fatalf("delete a child: %d %s", status, body)
	}
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+child+"/phase", user, url.Values{"PHASE": {"RUN"}}); status != http.StatusForbidden {
		t.Fatalf("run a child: %d %s", status, body)
	}
	// Deleting the matrix job deletes its children.
	if status, body, _ := s.form("DELETE", "/api/v1/jobs/"+id, user, nil); status != http.StatusSeeOther {
		t.Fatalf("delete: %d %s", status, body)
	}
	if status, _ := s.api("GET", "/api/v1/jobs/"+child, user, ""); status != http.StatusNotFound {
		t.Fatalf("child after its matrix job was deleted: %d", status)
	}
}

// TestJobMatrixBadInput: a matrix that is too large or has a bad value is
// a 400 JSON error naming the parameter, and nothing is created.
func TestJobMatrixBadInput(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	s.agent("c1", "role=client")
	many := func(n int, f string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf(f, i+1)
		}
		return out
	}
	for _, c := range []struct {
		name       string
		form       url.Values
		json       string
		param, msg string
	}{
		{name: "too many values", form: url.Values{"SERVER": many(jobs.MaxMatrixValues+1, "s%d")}, param: "server", msg: "at most 100"},
		{name: "too many combinations", form: url.Values{"SERVER": many(30, "s%d"), "COUNT": many(10, "%d")}, param: "server", msg: "more than 256 combinations (count 10 × server 30 values)"},
		{name: "a bad value", form: url.Values{"SERVER": {"ok.example.org", "Not Valid!"}}, param: "server", msg: "does not match"},
		{name: "a value out of range", form: url.Values{"SERVER": {"a"}, "COUNT": {"1", "1000"}}, param: "count", msg: "maximum"},
		{name: "a value twice", form: url.Values{"SERVER": {"a", "b", "a"}}, param: "server", msg: "given twice"},
		{name: "not a parameter", form: url.Values{"SERVER": {"a"}, "SPEED": {"1", "2"}}, param: "speed", msg: "not a parameter"},
		{name: "json empty array", json: `{"action":"download","targets":"c1","parameters":{"server":[]}}`, param: "server", msg: "no value"},
		{name: "json not strings", json: `{"action":"download","targets":"c1","parameters":{"server":[1,2]}}`, msg: "string or an array of strings"},
		{name: "bad label", form: url.Values{"SERVER": {"a"}, "LABEL": {"nolabel"}}, param: "LABEL", msg: "not a label"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var status int
			var body string
			if c.json != "" {
				st, b := s.api("POST", "/api/v1/jobs", user, c.json)
				status, body = st, string(b)
			} else {
				c.form.Set("ACTION", "download")
				c.form.Set("TARGETS", "c1")
				status, body, _ = s.form("POST", "/api/v1/jobs", user, c.form)
			}
			var e struct {
				Error struct{ Code, Message string }
			}
			if status != http.StatusBadRequest || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code == "" ||
				!strings.Contains(e.Error.Message, c.param) || !strings.Contains(e.Error.Message, c.msg) {
				t.Fatalf("status %d %s, want 400 naming %q with %q", status, body, c.param, c.msg)
			}
		})
	}
	if status, b := s.api("GET", "/api/v1/jobs", user, ""); status != 200 || string(b) != "{\"jobs\":[]}\n" {
		t.Fatalf("jobs after bad requests: %d %s", status, b)
	}
}

// TestJobMatrixAbort: aborting a matrix job aborts its running and its
// queued combinations; the agent is told to kill the one it runs.
func TestJobMatrixAbort(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1", "role=client")
	id := s.createJob(user, url.Values{"ACTION": {"download"}, "TARGETS": {"c1"}, "SERVER": {"a", "b", "c"}, "PHASE": {"RUN"}})
	r := nextRun(t, c1) // one at a time: the other two wait for the agent's slot
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: r.Job, StartedAt: time.Now()})
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"ABORT"}}); status != http.StatusSeeOther {
		t.Fatalf("abort: %d %s", status, body)
	}
	if m := nextRunOrAbort(t, c1); m.(*jobproto.Abort).Job != r.Job {
		t.Fatalf("agent got %+v, want the abort of %s", m, r.Job)
	}
	d := s.matrixJob(user, id)
	if d.Phase != "ABORTED" {
		t.Fatalf("phase %s", d.Phase)
	}
	wait.For(t, "every combination aborted", func() bool {
		d = s.matrixJob(user, id)
		for _, c := range d.JobInfo.Combinations {
			if c.Phase != "ABORTED" {
				return false
			}
		}
		return len(d.JobInfo.Combinations) == 3
	})
}

// TestJobMatrixAfterCrash: a hub that died in the middle of a matrix job
// finishes it after its restart. One matrix job had every child ended
// but was not itself (the crash came between): it completes at start. The
// other was EXECUTING with a child still PENDING (the crash came while
// its children were being run): that child runs once its agent connects,
// and the matrix job completes.
func TestJobMatrixAfterCrash(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	acts, _ := json.Marshal([]jobproto.Action{downloadAction()})
	if err := st.PutAgent(ctx, store.Agent{ID: "c1", Actions: acts, FirstSeen: time.Now(), LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	matrix := []store.MatrixParam{{Name: "server", Values: []string{"a", "b"}}}
	mk := func(j store.Job) {
		t.Helper()
		j.Owner, j.Action, j.Targets, j.CreatedAt = "alice", "download", "c1", time.Now()
		if err := st.CreateJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	for _, parent := range []string{"ended", "halfrun"} {
		mk(store.Job{ID: parent, Phase: store.PhaseExecuting, Matrix: matrix, StartedAt: time.Now(), Params: map[string]string{"count": "1"}})
		mk(store.Job{ID: jobs.ChildID(parent, 0), Parent: parent, Phase: store.PhaseCompleted, StartedAt: time.Now(), EndedAt: time.Now(),
			Params: map[string]string{"server": "a", "count": "1"}})
		if err := st.PutRun(ctx, store.Run{JobID: jobs.ChildID(parent, 0), AgentID: "c1", State: store.RunSucceeded,
			Metrics: json.RawMessage(`{"bytes_read":5}`)}); err != nil {
			t.Fatal(err)
		}
	}
	mk(store.Job{ID: jobs.ChildID("ended", 1), Parent: "ended", Phase: store.PhaseCompleted, StartedAt: time.Now(), EndedAt: time.Now(),
		Params: map[string]string{"server": "b", "count": "1"}})
	mk(store.Job{ID: jobs.ChildID("halfrun", 1), Parent: "halfrun", Phase: store.PhasePending, Params: map[string]string{"server": "b", "count": "1"}})

	s := startServer(t, func(c *Config, d *Deps) { d.Store = st })
	user := s.userToken("alice", auth.ScopeJobsRead)
	wait.For(t, "the ended matrix job completed at start", func() bool { return s.matrixJob(user, "ended").Phase == "COMPLETED" })
	c1 := s.agent("c1")
	r := nextRun(t, c1)
	if r.Job != jobs.ChildID("halfrun", 1) || r.Params["server"] != "b" {
		t.Fatalf("run after the restart: %+v", r)
	}
	finish(t, c1, jobproto.Result{Job: r.Job, Outcome: jobproto.OutcomeSucceeded, Metrics: json.RawMessage(`{"bytes_read":7}`)})
	wait.For(t, "the half-run matrix job completed", func() bool { return s.matrixJob(user, "halfrun").Phase == "COMPLETED" })
	status, b := s.api("GET", "/api/v1/jobs/halfrun/results/matrix.csv", user, "")
	if want := "agent,a,b,total\nc1,5,7,12\ntotal,5,7,12\n"; status != 200 || string(b) != want {
		t.Fatalf("matrix.csv: %d %q, want %q", status, b, want)
	}
}
