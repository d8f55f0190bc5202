package uwsapi

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

const testBase = "https://hub.example.org/api/v1/jobs"

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 123e6, time.UTC)

// Strings that need escaping in XML and JSON.
const (
	nastyOwner   = `O'Brien <ob@example.org> & "co" — Ünïcødé ✓`
	nastyRunID   = `run <1> & "x" 'y'`
	nastyParam   = `a<b & c>"d" 'e' — ü ]]> &amp;`
	nastyTail    = "curl: (7) <refused> & \"gone\"\n\tretry — ✗\r\n"
	nastySummary = "c2: failed (exit 3): \"boom\" <&> 'quoted'\nsecond line — naïve ✗ 日本"
	nastyRunErr  = `exit status 3 <&>"'`
)

// fixture is a job document to render, with what pyvo must read back.
type fixture struct {
	name string
	v    *jobView
	// lossy: the job holds characters XML cannot carry, replaced by
	// U+FFFD; pyvo's values are not compared.
	lossy       bool
	wantParams  [][2]string
	wantResults []wantResult
}

type wantResult struct {
	ID, Href string
	Size     int64 // 0: no size attribute (pyvo reads 0)
	MimeType string
}

func jobsFixtures() []fixture {
	metrics := json.RawMessage(`{"bytes_read":{"server-a":5,"server-b":12345678901234567890},"ok":true}`)
	return []fixture{
		{
			name: "pending",
			v: &jobView{Base: testBase, Job: store.Job{
				ID: "j-pending", Action: "ping", Targets: "c1,c2",
				Params: map[string]string{"count": "3", "Host": "a.example.org"},
				Phase:  store.PhasePending, CreatedAt: t0,
			}},
			wantParams: [][2]string{{"action", "ping"}, {"targets", "c1,c2"}, {"Host", "a.example.org"}, {"count", "3"}},
		},
		{
			name: "executing",
			v: &jobView{Base: testBase, Job: store.Job{
				ID: "j-exec", RunID: "nightly 42", Owner: "alice", Action: "iperf", Targets: "role=client",
				Params: map[string]string{"duration": "10"}, Phase: store.PhaseExecuting,
				Agents:    []string{"c1", "c2"},
				CreatedAt: t0, StartedAt: t0.Add(time.Second), Quote: t0.Add(5 * time.Minute),
				Destruction: t0.Add(24 * time.Hour), ExecDuration: 10 * time.Minute,
			}, Runs: []store.Run{
				{JobID: "j-exec", AgentID: "c1", State: store.RunRunning, ExitCode: -1, StartedAt: t0.Add(2 * time.Second)},
				{JobID: "j-exec", AgentID: "c2", State: store.RunDispatched}, // ExitCode 0 but no exit status yet
			}},
			wantParams: [][2]string{{"action", "iperf"}, {"targets", "role=client"}, {"duration", "10"}},
		},
		{
			name: "completed",
			v: &jobView{Base: testBase, Job: store.Job{
				ID: "j-done", Owner: "alice", Action: "iperf", Targets: "c1,c2", Phase: store.PhaseCompleted,
				CreatedAt: t0, StartedAt: t0.Add(time.Second), EndedAt: t0.Add(time.Minute),
				Destruction: t0.Add(7 * 24 * time.Hour), ExecDuration: time.Hour,
			}, Runs: []store.Run{
				{JobID: "j-done", AgentID: "c1", State: store.RunSucceeded, ExitCode: 0,
					StartedAt: t0.Add(2 * time.Second), EndedAt: t0.Add(50 * time.Second), Metrics: metrics,
					Files: []store.ResultFile{
						{Name: "out.csv", Size: 120, SHA256: strings.Repeat("a", 64), Path: "x/1"},
						{Name: "my result.json", Size: 0, SHA256: strings.Repeat("b", 64), Path: "x/2"},
					}},
				{JobID: "j-done", AgentID: "c2", State: store.RunSucceeded, ExitCode: 0,
					StartedAt: t0.Add(2 * time.Second), EndedAt: t0.Add(55 * time.Second),
					Files: []store.ResultFile{{Name: "image.fits", Size: 3000960, SHA256: strings.Repeat("c", 64), Path: "x/3"}}},
			}},
			wantParams: [][2]string{{"action", "iperf"}, {"targets", "c1,c2"}},
			wantResults: []wantResult{
				{"summary", testBase + "/j-done/results/summary", 0, "text/csv"},
				{"c1/out.csv", testBase + "/j-done/results/c1/out.csv", 120, "text/csv"},
				{"c1/my result.json", testBase + "/j-done/results/c1/my%20result.json", 0, "application/json"},
				{"c2/image.fits", testBase + "/j-done/results/c2/image.fits", 3000960, "application/fits"},
			},
		},
		{
			name: "error",
			v: &jobView{Base: testBase, Job: store.Job{
				ID: "j-err", RunID: nastyRunID, Owner: nastyOwner, Action: "probe", Targets: "role=client,site=UNL",
				Params: map[string]string{"msg": nastyParam}, Phase: store.PhaseError,
				CreatedAt: t0, StartedAt: t0.Add(time.Second), EndedAt: t0.Add(2 * time.Second),
				ErrorType: "transient", ErrorSummary: nastySummary,
			}, Runs: []store.Run{
				{JobID: "j-err", AgentID: "c1", State: store.RunSucceeded, ExitCode: 0,
					StartedAt: t0.Add(time.Second), EndedAt: t0.Add(2 * time.Second), Metrics: json.RawMessage(`{}`)},
				{JobID: "j-err", AgentID: "c2", State: store.RunFailed, ExitCode: 3, Error: nastyRunErr,
					StartedAt: t0.Add(time.Second), EndedAt: t0.Add(2 * time.Second), Stdout: "fetching a\nfetching b\n", Stderr: nastyTail},
			}},
			wantParams: [][2]string{{"action", "probe"}, {"targets", "role=client,site=UNL"}, {"msg", nastyParam}},
			wantResults: []wantResult{
				{"summary", testBase + "/j-err/results/summary", 0, "text/csv"},
			},
		},
		{
			name: "aborted",
			v: &jobView{Base: testBase, Job: store.Job{
				ID: "j-abort", Owner: "bob", Action: "sleep", Targets: "c1", Phase: store.PhaseAborted,
				CreatedAt: t0, StartedAt: t0.Add(time.Second), EndedAt: t0.Add(time.Hour),
				ExecDuration: time.Hour, ErrorSummary: "execution duration exceeded",
			}, Runs: []store.Run{
				{JobID: "j-abort", AgentID: "c1", State: store.RunAborted, ExitCode: -1,
					StartedAt: t0.Add(time.Second), EndedAt: t0.Add(time.Hour), Error: "aborted"},
			}},
			wantParams: [][2]string{{"action", "sleep"}, {"targets", "c1"}},
			wantResults: []wantResult{
				{"summary", testBase + "/j-abort/results/summary", 0, "text/csv"},
			},
		},
		{
			name: "archived",
			v: &jobView{Base: testBase, Job: store.Job{
				ID: "j-arch", Owner: "bob", Action: "ping", Targets: "c1", Phase: store.PhaseArchived,
				CreatedAt: t0, StartedAt: t0.Add(time.Second), EndedAt: t0.Add(2 * time.Second),
				Destruction: t0.Add(time.Hour),
			}, Runs: []store.Run{
				{JobID: "j-arch", AgentID: "c1", State: store.RunSucceeded, ExitCode: 0,
					StartedAt: t0.Add(time.Second), EndedAt: t0.Add(2 * time.Second),
					Files: []store.ResultFile{{Name: "gone.txt", Size: 1}}},
			}},
			wantParams: [][2]string{{"action", "ping"}, {"targets", "c1"}},
		},
		matrixFixture(),
		stepsFixture(),
		{
			name:  "invalid-chars",
			lossy: true,
			v: &jobView{Base: testBase, Job: store.Job{
				ID: "j-bad", Owner: "bad\x01owner", Action: "ping", Targets: "c1",
				Params: map[string]string{"esc": "\x1b[31mred\x1b[0m", "bad\xffutf8": "\x00"},
				Phase:  store.PhaseError, CreatedAt: t0, ErrorSummary: "nul\x00 and \xff\xfe",
			}, Runs: []store.Run{
				{JobID: "j-bad", AgentID: "c\x02", State: store.RunFailed, ExitCode: 1, Error: "\x7f\x08"},
			}},
		},
	}
}

// render runs a write function and returns the response.
func render(t *testing.T, f func(w http.ResponseWriter)) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	f(rec)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
	}
	return rec
}

func checkContentType(t *testing.T, rec *httptest.ResponseRecorder, asXML bool) {
	t.Helper()
	want := "application/json"
	if asXML {
		want = "application/xml; charset=utf-8"
	}
	if got := rec.Header().Get("Content-Type"); got != want {
		t.Errorf("Content-Type %q, want %q", got, want)
	}
}

func jobsList3() []store.Job {
	return []store.Job{
		{ID: "j1", Owner: "alice", Phase: store.PhaseCompleted, CreatedAt: t0},
		{ID: "j2", RunID: nastyRunID, Owner: nastyOwner, Phase: store.PhaseExecuting, CreatedAt: t0.Add(time.Second)},
		{ID: "j3", Phase: store.PhasePending, CreatedAt: t0.Add(2 * time.Second)},
	}
}

// uwsDocs renders every XML document variant.
func uwsDocs(t *testing.T) map[string][]byte {
	docs := map[string][]byte{}
	for _, f := range jobsFixtures() {
		rec := render(t, func(w http.ResponseWriter) { writeJob(w, true, f.v) })
		checkContentType(t, rec, true)
		docs["job-"+f.name] = rec.Body.Bytes()
	}
	docs["list-empty"] = render(t, func(w http.ResponseWriter) { writeJobList(w, true, nil, testBase) }).Body.Bytes()
	docs["list-3"] = render(t, func(w http.ResponseWriter) { writeJobList(w, true, jobsList3(), testBase) }).Body.Bytes()
	for _, f := range jobsFixtures() {
		docs["results-"+f.name] = render(t, func(w http.ResponseWriter) { writeResults(w, true, f.v) }).Body.Bytes()
		docs["parameters-"+f.name] = render(t, func(w http.ResponseWriter) { writeParameters(w, true, f.v) }).Body.Bytes()
	}
	return docs
}

func TestUWSXMLValidatesAgainstSchema(t *testing.T) {
	for name, doc := range uwsDocs(t) {
		t.Run(name, func(t *testing.T) {
			// Well-formed for Go's own parser too, with our namespaces.
			if err := wellFormed(doc); err != nil {
				t.Fatalf("not well-formed: %v\n%s", err, doc)
			}
			validateUWS(t, name, doc)
		})
	}
}

// TestUWSXMLSchemaCheckCanFail makes sure the validation step catches a
// document that breaks the schema (element order, bad phase).
func TestUWSXMLSchemaCheckCanFail(t *testing.T) {
	lint := xmllintPath(t)
	schema := uwsSchema(t)
	good := string(jobXML(jobsFixtures()[0].v))
	bad := map[string]string{
		"order": strings.Replace(good, "  <uws:ownerId xsi:nil=\"true\"/>\n  <uws:phase>PENDING</uws:phase>",
			"  <uws:phase>PENDING</uws:phase>\n  <uws:ownerId xsi:nil=\"true\"/>", 1),
		"phase": strings.Replace(good, "PENDING", "RUNNING", 1),
	}
	for name, doc := range bad {
		if doc == good {
			t.Fatalf("%s: replacement did not apply", name)
		}
		f := filepath.Join(t.TempDir(), name+".xml")
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(lint, "--noout", "--nonet", "--schema", schema, f).CombinedOutput(); err == nil {
			t.Errorf("%s: invalid document validated:\n%s", name, out)
		}
	}
}

func wellFormed(doc []byte) error {
	d := xml.NewDecoder(bytes.NewReader(doc))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestUWSJobXMLExact(t *testing.T) {
	got := string(jobXML(jobsFixtures()[0].v))
	want := `<?xml version="1.0" encoding="UTF-8"?>
<uws:job xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:sb="urn:switchboard:jobs" version="1.1">
  <uws:jobId>j-pending</uws:jobId>
  <uws:ownerId xsi:nil="true"/>
  <uws:phase>PENDING</uws:phase>
  <uws:quote xsi:nil="true"/>
  <uws:creationTime>2026-11-23T10:00:00.123Z</uws:creationTime>
  <uws:startTime xsi:nil="true"/>
  <uws:endTime xsi:nil="true"/>
  <uws:executionDuration>0</uws:executionDuration>
  <uws:destruction xsi:nil="true"/>
  <uws:parameters>
    <uws:parameter id="action">ping</uws:parameter>
    <uws:parameter id="targets">c1,c2</uws:parameter>
    <uws:parameter id="Host">a.example.org</uws:parameter>
    <uws:parameter id="count">3</uws:parameter>
  </uws:parameters>
  <uws:results></uws:results>
</uws:job>
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// xmlJob is what encoding/xml reads back of a job document.
type xmlJob struct {
	XMLName xml.Name `xml:"http://www.ivoa.net/xml/UWS/v1.0 job"`
	Version string   `xml:"version,attr"`
	JobID   string   `xml:"http://www.ivoa.net/xml/UWS/v1.0 jobId"`
	RunID   *string  `xml:"http://www.ivoa.net/xml/UWS/v1.0 runId"`
	OwnerID struct {
		Nil   string `xml:"http://www.w3.org/2001/XMLSchema-instance nil,attr"`
		Value string `xml:",chardata"`
	} `xml:"http://www.ivoa.net/xml/UWS/v1.0 ownerId"`
	Phase      string `xml:"http://www.ivoa.net/xml/UWS/v1.0 phase"`
	Parameters []struct {
		ID    string `xml:"id,attr"`
		Value string `xml:",chardata"`
	} `xml:"http://www.ivoa.net/xml/UWS/v1.0 parameters>parameter"`
	Results []struct {
		ID       string `xml:"id,attr"`
		Href     string `xml:"http://www.w3.org/1999/xlink href,attr"`
		Size     *int64 `xml:"size,attr"`
		MimeType string `xml:"mime-type,attr"`
	} `xml:"http://www.ivoa.net/xml/UWS/v1.0 results>result"`
	ErrorSummary *struct {
		Type      string `xml:"type,attr"`
		HasDetail string `xml:"hasDetail,attr"`
		Message   string `xml:"http://www.ivoa.net/xml/UWS/v1.0 message"`
	} `xml:"http://www.ivoa.net/xml/UWS/v1.0 errorSummary"`
	JobInfo struct {
		Error *string `xml:"urn:switchboard:jobs error"`
		Runs  []struct {
			Attrs      []xml.Attr `xml:",any,attr"`
			StdoutTail string     `xml:"urn:switchboard:jobs stdoutTail"`
			StderrTail string     `xml:"urn:switchboard:jobs stderrTail"`
			Metrics    string     `xml:"urn:switchboard:jobs metrics"`
		} `xml:"urn:switchboard:jobs run"`
	} `xml:"http://www.ivoa.net/xml/UWS/v1.0 jobInfo"`
}

// TestUWSJobXMLContent reads the documents back with encoding/xml: every
// value, escaped or not, comes back as written.
func TestUWSJobXMLContent(t *testing.T) {
	for _, f := range jobsFixtures() {
		t.Run(f.name, func(t *testing.T) {
			doc := jobXML(f.v)
			var got xmlJob
			if err := xml.Unmarshal(doc, &got); err != nil {
				t.Fatalf("%v\n%s", err, doc)
			}
			j := f.v.Job
			if got.Version != "1.1" {
				t.Errorf("version %q", got.Version)
			}
			if f.lossy {
				if !strings.Contains(got.OwnerID.Value, "\uFFFD") || !strings.Contains(got.ErrorSummary.Message, "\uFFFD") {
					t.Errorf("invalid characters not replaced: owner %q, message %q", got.OwnerID.Value, got.ErrorSummary.Message)
				}
				return
			}
			if got.JobID != j.ID || string(got.Phase) != string(j.Phase) {
				t.Errorf("jobId %q phase %q", got.JobID, got.Phase)
			}
			if (got.RunID == nil) != (j.RunID == "") || got.RunID != nil && *got.RunID != j.RunID {
				t.Errorf("runId %v, want %q", got.RunID, j.RunID)
			}
			if j.Owner == "" {
				if got.OwnerID.Nil != "true" || got.OwnerID.Value != "" {
					t.Errorf("ownerId %+v, want nil", got.OwnerID)
				}
			} else if got.OwnerID.Nil != "" || got.OwnerID.Value != j.Owner {
				t.Errorf("ownerId %+v, want %q", got.OwnerID, j.Owner)
			}
			var params [][2]string
			for _, p := range got.Parameters {
				params = append(params, [2]string{p.ID, p.Value})
			}
			if !reflect.DeepEqual(params, f.wantParams) {
				t.Errorf("parameters %q, want %q", params, f.wantParams)
			}
			var results []wantResult
			for _, r := range got.Results {
				var size int64
				if r.Size != nil {
					size = *r.Size
					if size == 0 && r.ID != "c1/my result.json" {
						t.Errorf("result %s: size=\"0\"", r.ID)
					}
				} else if r.ID != SummaryResult && r.ID != MatrixJSONResult && r.ID != MatrixCSVResult { // generated on request
					t.Errorf("result %s has no size", r.ID)
				}
				results = append(results, wantResult{r.ID, r.Href, size, r.MimeType})
			}
			if !reflect.DeepEqual(results, f.wantResults) {
				t.Errorf("results %+v\nwant %+v", results, f.wantResults)
			}
			if j.ErrorSummary == "" {
				if got.ErrorSummary != nil {
					t.Errorf("errorSummary %+v, want none", got.ErrorSummary)
				}
			} else {
				want := "fatal"
				if j.ErrorType == "transient" {
					want = "transient"
				}
				if got.ErrorSummary == nil || got.ErrorSummary.Type != want || got.ErrorSummary.HasDetail != "true" ||
					got.ErrorSummary.Message != j.ErrorSummary {
					t.Errorf("errorSummary %+v, want %s %q", got.ErrorSummary, want, j.ErrorSummary)
				}
			}
			if len(got.JobInfo.Runs) != len(f.v.Runs) {
				t.Fatalf("%d runs in jobInfo, want %d", len(got.JobInfo.Runs), len(f.v.Runs))
			}
			for i, r := range f.v.Runs {
				attrs := map[string]string{}
				for _, a := range got.JobInfo.Runs[i].Attrs {
					attrs[a.Name.Local] = a.Value
				}
				want := map[string]string{"agent": r.AgentID, "state": string(r.State)}
				if f.v.Matrix != nil { // a matrix job's run: its name and its child job
					want["name"], want["job"] = f.v.runName(i), r.JobID
				}
				if s := f.v.runStep(i); s != "" { // a test's run: its step
					want["step"] = s
				}
				if r.State.Final() && r.ExitCode >= 0 {
					want["exitCode"] = fmt.Sprint(r.ExitCode)
				}
				if !r.StartedAt.IsZero() {
					want["startTime"] = r.StartedAt.UTC().Format("2006-01-02T15:04:05.000Z")
				}
				if !r.EndedAt.IsZero() {
					want["endTime"] = r.EndedAt.UTC().Format("2006-01-02T15:04:05.000Z")
				}
				if r.Error != "" {
					want["error"] = r.Error
				}
				if !reflect.DeepEqual(attrs, want) {
					t.Errorf("run %d: attributes %q, want %q", i, attrs, want)
				}
				// A UWS client sees each run's output tails and metrics.
				gr := got.JobInfo.Runs[i]
				wantMetrics := ""
				if json.Valid(r.Metrics) {
					wantMetrics = string(r.Metrics)
				}
				if gr.StdoutTail != r.Stdout || gr.StderrTail != r.Stderr || gr.Metrics != wantMetrics {
					t.Errorf("run %d: stdout %q stderr %q metrics %q, want %q %q %q", i,
						gr.StdoutTail, gr.StderrTail, gr.Metrics, r.Stdout, r.Stderr, wantMetrics)
				}
			}
			// … and why the job failed, in jobInfo too.
			if got.JobInfo.Error == nil && j.ErrorSummary != "" || got.JobInfo.Error != nil && *got.JobInfo.Error != j.ErrorSummary {
				t.Errorf("jobInfo error %v, want %q", got.JobInfo.Error, j.ErrorSummary)
			}
		})
	}
}

// pyvoOutput is what testdata/pyvo_parse.py prints for one document.
type pyvoOutput struct {
	Version           *string     `json:"version"`
	JobID             *string     `json:"jobid"`
	RunID             *string     `json:"runid"`
	OwnerID           *string     `json:"ownerid"`
	Phase             *string     `json:"phase"`
	Quote             *string     `json:"quote"`
	CreationTime      *string     `json:"creationtime"`
	StartTime         *string     `json:"starttime"`
	EndTime           *string     `json:"endtime"`
	ExecutionDuration *float64    `json:"executionduration"`
	Destruction       *string     `json:"destruction"`
	Parameters        [][]*string `json:"parameters"`
	Results           [][]any     `json:"results"`
	ErrorType         *string     `json:"errortype"`
	HasDetail         *bool       `json:"hasdetail"`
	Message           *string     `json:"message"`
	Jobs              []struct {
		JobID        *string `json:"jobid"`
		Phase        *string `json:"phase"`
		RunID        *string `json:"runid"`
		OwnerID      *string `json:"ownerid"`
		CreationTime *string `json:"creationtime"`
	} `json:"jobs"`
	Warnings []string `json:"warnings"`
}

// runPyvo parses the documents (kind "job" or "list") with pyvo.
func runPyvo(t *testing.T, docs []struct {
	kind string
	doc  []byte
}) []pyvoOutput {
	t.Helper()
	python := pythonWithPyvo(t)
	dir := t.TempDir()
	script := filepath.Join(moduleRoot(t), "internal", "jobs", "uwsapi", "testdata", "pyvo_parse.py")
	args := []string{script}
	for i, d := range docs {
		p := filepath.Join(dir, fmt.Sprintf("doc%d.xml", i))
		if err := os.WriteFile(p, d.doc, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, d.kind+"="+p)
	}
	cmd := exec.Command(python, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pyvo: %v\n%s", err, stderr.String())
	}
	var res []pyvoOutput
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var o pyvoOutput
		if err := dec.Decode(&o); err != nil {
			t.Fatalf("pyvo output: %v\n%s", err, out)
		}
		res = append(res, o)
	}
	if len(res) != len(docs) {
		t.Fatalf("pyvo printed %d documents, want %d\n%s\n%s", len(res), len(docs), out, stderr.String())
	}
	return res
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// pyTime is how pyvo (astropy isot) shows a time: UTC, milliseconds, no
// zone; nil when zero.
func pyTime(t time.Time) string {
	if t.IsZero() {
		return "<nil>"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000")
}

func nilIfEmpty(s string) string {
	if s == "" {
		return "<nil>"
	}
	return s
}

// jobInfoElements are the local names of <uws:jobInfo> and what it holds.
var jobInfoElements = []string{"jobInfo", "error", "run", "stdoutTail", "stderrTail", "metrics",
	"label", "definition", "matrixJob", "combination", "value", "step"}

// checkPyvoWarnings allows only pyvo's complaints about our jobInfo
// content, which it does not know, and about the root element of a job
// list, which pyvo 1.2 reports for any list.
func checkPyvoWarnings(t *testing.T, ws []string) {
	t.Helper()
	for _, w := range ws {
		if !slices.ContainsFunc(jobInfoElements, func(e string) bool { return strings.HasSuffix(w, "Unknown element "+e) }) &&
			!strings.HasSuffix(w, "Unknown element jobs") {
			t.Errorf("pyvo warning: %s", w)
		}
	}
}

func TestPyvoParsesJobs(t *testing.T) {
	fixtures := jobsFixtures()
	var docs []struct {
		kind string
		doc  []byte
	}
	for _, f := range fixtures {
		docs = append(docs, struct {
			kind string
			doc  []byte
		}{"job", jobXML(f.v)})
	}
	out := runPyvo(t, docs)
	for i, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			got := out[i]
			j := f.v.Job
			checkPyvoWarnings(t, got.Warnings)
			if str(got.Version) != "1.1" || str(got.JobID) != j.ID || str(got.Phase) != string(j.Phase) {
				t.Errorf("version %s jobid %s phase %s", str(got.Version), str(got.JobID), str(got.Phase))
			}
			if f.lossy {
				return
			}
			checks := []struct{ name, got, want string }{
				{"runid", str(got.RunID), nilIfEmpty(j.RunID)},
				{"ownerid", str(got.OwnerID), nilIfEmpty(j.Owner)},
				{"quote", str(got.Quote), pyTime(j.Quote)},
				{"creationtime", str(got.CreationTime), pyTime(j.CreatedAt)},
				{"starttime", str(got.StartTime), pyTime(j.StartedAt)},
				{"endtime", str(got.EndTime), pyTime(j.EndedAt)},
				{"destruction", str(got.Destruction), pyTime(j.Destruction)},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: pyvo read %q, want %q", c.name, c.got, c.want)
				}
			}
			if got.ExecutionDuration == nil || *got.ExecutionDuration != j.ExecDuration.Seconds() {
				t.Errorf("executionduration %v, want %v", got.ExecutionDuration, j.ExecDuration.Seconds())
			}
			var params [][2]string
			for _, p := range got.Parameters {
				params = append(params, [2]string{str(p[0]), str(p[1])})
			}
			if !reflect.DeepEqual(params, f.wantParams) {
				t.Errorf("parameters %q, want %q", params, f.wantParams)
			}
			var results []wantResult
			for _, r := range got.Results {
				id, _ := r[0].(string)
				href, _ := r[1].(string)
				size, _ := r[2].(float64)
				mt, _ := r[3].(string)
				results = append(results, wantResult{id, href, int64(size), mt})
			}
			if !reflect.DeepEqual(results, f.wantResults) {
				t.Errorf("results %+v\nwant %+v", results, f.wantResults)
			}
			if j.ErrorSummary == "" {
				if got.ErrorType != nil || got.Message != nil {
					t.Errorf("error summary %s %s, want none", str(got.ErrorType), str(got.Message))
				}
			} else {
				want := "fatal"
				if j.ErrorType == "transient" {
					want = "transient"
				}
				if str(got.ErrorType) != want || got.HasDetail == nil || !*got.HasDetail || str(got.Message) != j.ErrorSummary {
					t.Errorf("error summary %s %v %q, want %s true %q", str(got.ErrorType), got.HasDetail, str(got.Message), want, j.ErrorSummary)
				}
			}
		})
	}
}

func TestPyvoParsesJobList(t *testing.T) {
	jobs := jobsList3()
	out := runPyvo(t, []struct {
		kind string
		doc  []byte
	}{
		{"list", render(t, func(w http.ResponseWriter) { writeJobList(w, true, nil, testBase) }).Body.Bytes()},
		{"list", render(t, func(w http.ResponseWriter) { writeJobList(w, true, jobs, testBase) }).Body.Bytes()},
	})
	if len(out[0].Jobs) != 0 {
		t.Errorf("empty list: pyvo read %d jobs", len(out[0].Jobs))
	}
	got := out[1]
	checkPyvoWarnings(t, got.Warnings)
	if len(got.Jobs) != len(jobs) {
		t.Fatalf("pyvo read %d jobs, want %d", len(got.Jobs), len(jobs))
	}
	for i, j := range jobs {
		g := got.Jobs[i]
		if str(g.JobID) != j.ID || str(g.Phase) != string(j.Phase) || str(g.RunID) != nilIfEmpty(j.RunID) ||
			str(g.OwnerID) != nilIfEmpty(j.Owner) || str(g.CreationTime) != pyTime(j.CreatedAt) {
			t.Errorf("job %d: pyvo read %s %s %s %s %s", i, str(g.JobID), str(g.Phase), str(g.RunID), str(g.OwnerID), str(g.CreationTime))
		}
	}
}

func TestUWSJobListXMLHrefs(t *testing.T) {
	rec := render(t, func(w http.ResponseWriter) { writeJobList(w, true, jobsList3(), testBase) })
	checkContentType(t, rec, true)
	var got struct {
		Version string `xml:"version,attr"`
		Refs    []struct {
			ID   string `xml:"id,attr"`
			Href string `xml:"http://www.w3.org/1999/xlink href,attr"`
		} `xml:"http://www.ivoa.net/xml/UWS/v1.0 jobref"`
	}
	if err := xml.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != "1.1" || len(got.Refs) != 3 || got.Refs[1].ID != "j2" || got.Refs[1].Href != testBase+"/j2" {
		t.Errorf("%+v", got)
	}
}

// ---------------------------------------------------------------------------
// JSON

func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, b)
	}
	return v
}

func TestUWSJobJSON(t *testing.T) {
	fx := jobsFixtures()
	byName := map[string]*jobView{}
	for _, f := range fx {
		byName[f.name] = f.v
	}
	tests := []struct {
		name string
		want string
	}{
		{"pending", `{"jobId":"j-pending","runId":null,"ownerId":null,"phase":"PENDING","quote":null,
			"creationTime":"2026-11-23T10:00:00.123Z","startTime":null,"endTime":null,"executionDuration":0,
			"destruction":null,"parameters":{"action":"ping","targets":"c1,c2","Host":"a.example.org","count":"3"},
			"results":[],"jobInfo":{"runs":[]}}`},
		{"executing", `{"jobId":"j-exec","runId":"nightly 42","ownerId":"alice","phase":"EXECUTING",
			"quote":"2026-11-23T10:05:00.123Z","creationTime":"2026-11-23T10:00:00.123Z",
			"startTime":"2026-11-23T10:00:01.123Z","endTime":null,"executionDuration":600,
			"destruction":"2026-11-24T10:00:00.123Z","parameters":{"action":"iperf","targets":"role=client","duration":"10"},
			"results":[],"jobInfo":{"runs":[
			{"agent":"c1","state":"running","exitCode":null,"startTime":"2026-11-23T10:00:02.123Z","endTime":null,"error":"","stdoutTail":"","stderrTail":"","metrics":null,"files":[]},
			{"agent":"c2","state":"dispatched","exitCode":null,"startTime":null,"endTime":null,"error":"","stdoutTail":"","stderrTail":"","metrics":null,"files":[]}]}}`},
		{"completed", `{"jobId":"j-done","runId":null,"ownerId":"alice","phase":"COMPLETED","quote":null,
			"creationTime":"2026-11-23T10:00:00.123Z","startTime":"2026-11-23T10:00:01.123Z","endTime":"2026-11-23T10:01:00.123Z",
			"executionDuration":3600,"destruction":"2026-11-30T10:00:00.123Z","parameters":{"action":"iperf","targets":"c1,c2"},
			"results":[
			{"id":"summary","href":"https://hub.example.org/api/v1/jobs/j-done/results/summary","size":null,"mimeType":"text/csv"},
			{"id":"c1/out.csv","href":"https://hub.example.org/api/v1/jobs/j-done/results/c1/out.csv","size":120,"mimeType":"text/csv"},
			{"id":"c1/my result.json","href":"https://hub.example.org/api/v1/jobs/j-done/results/c1/my%20result.json","size":0,"mimeType":"application/json"},
			{"id":"c2/image.fits","href":"https://hub.example.org/api/v1/jobs/j-done/results/c2/image.fits","size":3000960,"mimeType":"application/fits"}],
			"jobInfo":{"runs":[
			{"agent":"c1","state":"succeeded","exitCode":0,"startTime":"2026-11-23T10:00:02.123Z","endTime":"2026-11-23T10:00:50.123Z","error":"",
			 "stdoutTail":"","stderrTail":"","metrics":{"bytes_read":{"server-a":5,"server-b":12345678901234567890},"ok":true},
			 "files":[{"name":"out.csv","size":120,"sha256":"` + strings.Repeat("a", 64) + `"},{"name":"my result.json","size":0,"sha256":"` + strings.Repeat("b", 64) + `"}]},
			{"agent":"c2","state":"succeeded","exitCode":0,"startTime":"2026-11-23T10:00:02.123Z","endTime":"2026-11-23T10:00:55.123Z","error":"",
			 "stdoutTail":"","stderrTail":"","metrics":null,"files":[{"name":"image.fits","size":3000960,"sha256":"` + strings.Repeat("c", 64) + `"}]}]}}`},
		{"error", `{"jobId":"j-err","runId":` + jsonQuote(nastyRunID) + `,"ownerId":` + jsonQuote(nastyOwner) + `,"phase":"ERROR","quote":null,
			"creationTime":"2026-11-23T10:00:00.123Z","startTime":"2026-11-23T10:00:01.123Z","endTime":"2026-11-23T10:00:02.123Z",
			"executionDuration":0,"destruction":null,"parameters":{"action":"probe","targets":"role=client,site=UNL","msg":` + jsonQuote(nastyParam) + `},
			"results":[{"id":"summary","href":"https://hub.example.org/api/v1/jobs/j-err/results/summary","size":null,"mimeType":"text/csv"}],
			"errorSummary":{"type":"transient","hasDetail":true,"message":` + jsonQuote(nastySummary) + `},
			"jobInfo":{"runs":[
			{"agent":"c1","state":"succeeded","exitCode":0,"startTime":"2026-11-23T10:00:01.123Z","endTime":"2026-11-23T10:00:02.123Z","error":"","stdoutTail":"","stderrTail":"","metrics":{},"files":[]},
			{"agent":"c2","state":"failed","exitCode":3,"startTime":"2026-11-23T10:00:01.123Z","endTime":"2026-11-23T10:00:02.123Z","error":` + jsonQuote(nastyRunErr) + `,
			 "stdoutTail":"fetching a\nfetching b\n","stderrTail":` + jsonQuote(nastyTail) + `,"metrics":null,"files":[]}]}}`},
		{"aborted", `{"jobId":"j-abort","runId":null,"ownerId":"bob","phase":"ABORTED","quote":null,
			"creationTime":"2026-11-23T10:00:00.123Z","startTime":"2026-11-23T10:00:01.123Z","endTime":"2026-11-23T11:00:00.123Z",
			"executionDuration":3600,"destruction":null,"parameters":{"action":"sleep","targets":"c1"},
			"results":[{"id":"summary","href":"https://hub.example.org/api/v1/jobs/j-abort/results/summary","size":null,"mimeType":"text/csv"}],
			"errorSummary":{"type":"fatal","hasDetail":true,"message":"execution duration exceeded"},
			"jobInfo":{"runs":[{"agent":"c1","state":"aborted","exitCode":null,"startTime":"2026-11-23T10:00:01.123Z","endTime":"2026-11-23T11:00:00.123Z","error":"aborted","stdoutTail":"","stderrTail":"","metrics":null,"files":[]}]}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := render(t, func(w http.ResponseWriter) { writeJob(w, false, byName[tc.name]) })
			checkContentType(t, rec, false)
			got := decodeJSON(t, rec.Body.Bytes())
			want := decodeJSON(t, []byte(tc.want))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %s\nwant %s", rec.Body.Bytes(), compact(t, tc.want))
			}
			// Big integers in metrics are passed through, not rounded.
			if tc.name == "completed" && !bytes.Contains(rec.Body.Bytes(), []byte("12345678901234567890")) {
				t.Errorf("big metric rounded: %s", rec.Body.Bytes())
			}
		})
	}
	// Every fixture encodes, including invalid characters and metrics.
	for _, f := range fx {
		rec := render(t, func(w http.ResponseWriter) { writeJob(w, false, f.v) })
		decodeJSON(t, rec.Body.Bytes())
	}
}

func jsonQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func compact(t *testing.T, s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestUWSJobJSONInvalidMetrics(t *testing.T) {
	v := &jobView{Base: testBase, Job: store.Job{ID: "j", Phase: store.PhaseCompleted, CreatedAt: t0},
		Runs: []store.Run{{AgentID: "c1", State: store.RunSucceeded, Metrics: json.RawMessage(`{"a":`)}}}
	rec := render(t, func(w http.ResponseWriter) { writeJob(w, false, v) })
	var got struct {
		JobInfo struct {
			Runs []map[string]any `json:"runs"`
		} `json:"jobInfo"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if m, ok := got.JobInfo.Runs[0]["metrics"]; !ok || m != nil {
		t.Errorf("metrics %v, want null", m)
	}
}

func TestUWSParametersAndResultsJSON(t *testing.T) {
	fx := jobsFixtures()
	rec := render(t, func(w http.ResponseWriter) { writeParameters(w, false, fx[0].v) })
	checkContentType(t, rec, false)
	// Order: action, targets, then the parameters by name.
	if got, want := strings.TrimSpace(rec.Body.String()),
		`{"parameters":{"action":"ping","targets":"c1,c2","Host":"a.example.org","count":"3"}}`; got != want {
		t.Errorf("parameters %s, want %s", got, want)
	}
	rec = render(t, func(w http.ResponseWriter) { writeResults(w, false, fx[2].v) })
	checkContentType(t, rec, false)
	got := decodeJSON(t, rec.Body.Bytes())
	want := decodeJSON(t, []byte(`{"results":[
		{"id":"summary","href":"https://hub.example.org/api/v1/jobs/j-done/results/summary","size":null,"mimeType":"text/csv"},
		{"id":"c1/out.csv","href":"https://hub.example.org/api/v1/jobs/j-done/results/c1/out.csv","size":120,"mimeType":"text/csv"},
		{"id":"c1/my result.json","href":"https://hub.example.org/api/v1/jobs/j-done/results/c1/my%20result.json","size":0,"mimeType":"application/json"},
		{"id":"c2/image.fits","href":"https://hub.example.org/api/v1/jobs/j-done/results/c2/image.fits","size":3000960,"mimeType":"application/fits"}]}`))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("results %s", rec.Body.Bytes())
	}
	// No results: an empty array, not null.
	rec = render(t, func(w http.ResponseWriter) { writeResults(w, false, fx[5].v) })
	if got := strings.TrimSpace(rec.Body.String()); got != `{"results":[]}` {
		t.Errorf("archived results %s", got)
	}
}

func TestUWSParametersShadowing(t *testing.T) {
	// Action parameters named like the job's own fields are not shown:
	// they would collide in the JSON object.
	j := store.Job{Action: "ping", Targets: "c1", Params: map[string]string{"ACTION": "x", "targets": "y", "n": "1"}}
	got := params(&j)
	want := []param{{"action", "ping"}, {"targets", "c1"}, {"n", "1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("params %v, want %v", got, want)
	}
}

func TestUWSJobListJSON(t *testing.T) {
	rec := render(t, func(w http.ResponseWriter) { writeJobList(w, false, nil, testBase) })
	checkContentType(t, rec, false)
	if got := strings.TrimSpace(rec.Body.String()); got != `{"jobs":[]}` {
		t.Errorf("empty list %s", got)
	}
	rec = render(t, func(w http.ResponseWriter) { writeJobList(w, false, jobsList3(), testBase) })
	got := decodeJSON(t, rec.Body.Bytes())
	want := decodeJSON(t, []byte(`{"jobs":[
		{"jobId":"j1","href":"https://hub.example.org/api/v1/jobs/j1","phase":"COMPLETED","runId":null,"ownerId":"alice","creationTime":"2026-11-23T10:00:00.123Z","action":null,"targets":null,"startTime":null,"endTime":null,"errorSummary":null},
		{"jobId":"j2","href":"https://hub.example.org/api/v1/jobs/j2","phase":"EXECUTING","runId":`+jsonQuote(nastyRunID)+`,"ownerId":`+jsonQuote(nastyOwner)+`,"creationTime":"2026-11-23T10:00:01.123Z","action":null,"targets":null,"startTime":null,"endTime":null,"errorSummary":null},
		{"jobId":"j3","href":"https://hub.example.org/api/v1/jobs/j3","phase":"PENDING","runId":null,"ownerId":null,"creationTime":"2026-11-23T10:00:02.123Z","action":null,"targets":null,"startTime":null,"endTime":null,"errorSummary":null}]}`))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("list %s", rec.Body.Bytes())
	}
}

// ---------------------------------------------------------------------------
// wantsXML

func TestWantsXML(t *testing.T) {
	tests := []struct {
		accept []string
		want   bool
	}{
		// UWS XML unless JSON is asked for: standard clients send no
		// Accept header or */*.
		{nil, true},
		{[]string{""}, true},
		{[]string{"*/*"}, true},
		{[]string{"application/json"}, false},
		{[]string{"application/json;q=0.5"}, false},
		{[]string{"application/xml"}, true},
		{[]string{"text/xml"}, true},
		{[]string{"Application/XML"}, true},
		{[]string{"application/xml; charset=utf-8"}, true},
		{[]string{"application/xml;q=0.5, application/json"}, false},
		{[]string{"application/json;q=0.5, application/xml"}, true},
		{[]string{"application/json, application/xml"}, false}, // tie, JSON named → JSON
		{[]string{"application/xml, application/json"}, false},
		{[]string{"application/json, */*"}, false},
		{[]string{"application/json;q=0.5, */*"}, true},
		{[]string{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, true},
		{[]string{"application/xml;q=0"}, false},
		{[]string{"application/xml;q=0, */*"}, false},
		{[]string{"application/*"}, true},
		{[]string{"text/*"}, true},
		{[]string{"text/plain"}, false},
		{[]string{"application/xml, */*;q=0.1"}, true},
		{[]string{"application/xml;q=0.5, */*"}, false},
		{[]string{"application/xml;q=0.5, application/*;q=0.4"}, true},
		{[]string{"application/xml;q=0.5, application/*;q=0.4, application/json;q=0.6"}, false},
		{[]string{"application/xml;q=abc"}, true}, // no valid entry: as if absent
		{[]string{"application/xml;q=2"}, true},
		{[]string{"application/json;q=2"}, true},
		{[]string{"application/xml ; Q=0.7 , application/json;q=0.6"}, true},
		{[]string{"application/json;q=0.1", "text/xml"}, true},
		{[]string{"garbage"}, true},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/api/v1/jobs", nil)
		for _, a := range tc.accept {
			r.Header.Add("Accept", a)
		}
		if got := wantsXML(r); got != tc.want {
			t.Errorf("Accept %q: wantsXML %v, want %v", tc.accept, got, tc.want)
		}
	}
}

// ---------------------------------------------------------------------------
// Request parameters

// checkParamErr checks that err is a *paramError for param whose message
// names the parameter.
func checkParamErr(t *testing.T, input string, err error, param string) {
	t.Helper()
	var pe *paramError
	if !errors.As(err, &pe) {
		t.Errorf("%q: error %v (%T), want *paramError", input, err, err)
		return
	}
	if pe.Param != param {
		t.Errorf("%q: Param %q, want %q", input, pe.Param, param)
	}
	if !strings.Contains(err.Error(), param) || pe.Message == "" {
		t.Errorf("%q: message %q does not name %s", input, err.Error(), param)
	}
}

func TestParseWait(t *testing.T) {
	const maxWait = 60 * time.Second
	good := map[string]time.Duration{
		"0": 0, "5": 5 * time.Second, "60": maxWait, "61": maxWait, "-1": maxWait, " 7 ": 7 * time.Second,
		"+3": 3 * time.Second, "99999999999999999999": maxWait, "9223372036854775807": maxWait,
	}
	for in, want := range good {
		got, err := parseWait(in, maxWait)
		if err != nil || got != want {
			t.Errorf("parseWait(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-2", "-99999999999999999999", "1.5", "abc", "1e3", "0x10", "5s", "- 1"} {
		_, err := parseWait(in, maxWait)
		checkParamErr(t, in, err, "WAIT")
	}
}

func TestParseLast(t *testing.T) {
	good := map[string]int{"1": 1, "42": 42, "10000": 10000, " 3": 3}
	for in, want := range good {
		got, err := parseLast(in)
		if err != nil || got != want {
			t.Errorf("parseLast(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "10001", "1.0", "x", "99999999999999999999"} {
		_, err := parseLast(in)
		checkParamErr(t, in, err, "LAST")
	}
}

var instantTests = []struct {
	in   string
	want time.Time
}{
	{"2026-11-23T10:00:00Z", time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
	{"2026-11-23T10:00:00.123Z", time.Date(2026, 11, 23, 10, 0, 0, 123e6, time.UTC)},
	{"2026-11-23T10:00:00.123456789Z", time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)},
	{"2026-11-23T10:00:00.123456Z", time.Date(2026, 11, 23, 10, 0, 0, 123456e3, time.UTC)}, // as pyvo sends
	{"2026-11-23T10:00:00+01:00", time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)},
	{"2026-11-23T10:00:00.5-02:30", time.Date(2026, 11, 23, 12, 30, 0, 5e8, time.UTC)},
	{"2026-11-23T10:00:00", time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
	{"2026-11-23T10:00:00.250", time.Date(2026, 11, 23, 10, 0, 0, 25e7, time.UTC)},
	{"2026-11-23", time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)},
	{"2026-11-23t10:00:00z", time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
	{"2026-11-23 10:00:00Z", time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
	{" 2026-11-23T10:00:00Z ", time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
}

var badInstants = []string{
	"", "yesterday", "2026-13-01", "2026-02-30", "2026-11-23T25:00:00Z", "2026-11-23T10:00Z",
	"1700000000", "2026-11-23T10:00:00+0100", "26-11-23", "2026/11/23", "0000-01-01T00:30:00+01:00",
	"2026-11-23T10:00:00ZZ", "2026-11-23Z",
}

func TestParseAfter(t *testing.T) {
	for _, tc := range instantTests {
		got, err := parseAfter(tc.in)
		if err != nil || !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("parseAfter(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range badInstants {
		_, err := parseAfter(in)
		checkParamErr(t, in, err, "AFTER")
	}
}

func TestParseDestruction(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	good := map[string]time.Time{
		"2026-11-23T10:00:00Z":      now,
		"2026-11-23T09:59:59.5Z":    now.Add(-500 * time.Millisecond),
		"2026-11-23T09:59:59Z":      now.Add(-time.Second),
		"2026-11-24":                now.Add(14 * time.Hour),
		"2026-11-23T12:00:00+02:00": now,
		"2030-01-01T00:00:00":       time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for in, want := range good {
		got, err := parseDestruction(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseDestruction(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range append([]string{"2026-11-23T09:59:58.999Z", "2026-11-23", "2020-01-01T00:00:00Z"}, badInstants...) {
		_, err := parseDestruction(in, now)
		checkParamErr(t, in, err, "DESTRUCTION")
	}
	_, err := parseDestruction("2026-11-22", now)
	if err == nil || !strings.Contains(err.Error(), "past") {
		t.Errorf("past destruction: %v", err)
	}
}

func TestParseExecutionDuration(t *testing.T) {
	good := map[string]time.Duration{
		"0": 0, "1": time.Second, "3600": time.Hour, "31536000": 365 * 24 * time.Hour, " 60 ": time.Minute,
	}
	for in, want := range good {
		got, err := parseExecutionDuration(in)
		if err != nil || got != want {
			t.Errorf("parseExecutionDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "31536001", "1.5", "1h", "abc", "99999999999999999999"} {
		_, err := parseExecutionDuration(in)
		checkParamErr(t, in, err, "EXECUTIONDURATION")
	}
}

func TestParsePhases(t *testing.T) {
	got, err := parsePhases([]string{"executing", "QUEUED", "Executing", " archived "})
	want := []store.Phase{store.PhaseExecuting, store.PhaseQueued, store.PhaseArchived}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parsePhases = %v, %v; want %v", got, err, want)
	}
	for _, p := range store.Phases {
		got, err := parsePhases([]string{strings.ToLower(string(p))})
		if err != nil || len(got) != 1 || got[0] != p {
			t.Errorf("parsePhases(%s) = %v, %v", p, got, err)
		}
	}
	if got, err := parsePhases(nil); err != nil || len(got) != 0 {
		t.Errorf("parsePhases(nil) = %v, %v", got, err)
	}
	for _, in := range [][]string{{"RUN"}, {""}, {"COMPLETED", "DONE"}, {"EXECUTING,QUEUED"}} {
		_, err := parsePhases(in)
		checkParamErr(t, strings.Join(in, "|"), err, "PHASE")
	}
}

func TestParamErrorMessage(t *testing.T) {
	err := error(&paramError{Param: "WAIT", Message: "must be a whole number"})
	if got := err.Error(); got != "invalid WAIT: must be a whole number" {
		t.Errorf("Error() = %q", got)
	}
}

// ---------------------------------------------------------------------------
// formParams

func TestFormParamsURLEncoded(t *testing.T) {
	r := httptest.NewRequest("POST", "/api/v1/jobs?Wait=5&phase=RUN", strings.NewReader("PHASE=ABORT&RunId=a+b%26c&action=ping&EXECUTIONDURATION=60"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	got, err := formParams(r)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"wait": {"5"}, "phase": {"RUN", "ABORT"}, "runid": {"a b&c"}, "action": {"ping"}, "executionduration": {"60"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("formParams = %v, want %v", got, want)
	}
	if r.Form != nil || r.PostForm != nil {
		t.Error("formParams changed r.Form")
	}
}

func TestFormParamsMultipart(t *testing.T) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("ACTION", "ping")
	_ = mw.WriteField("Targets", "c1,c2")
	fw, _ := mw.CreateFormFile("upload", "f.txt")
	_, _ = fw.Write([]byte("file content"))
	_ = mw.Close()
	r := httptest.NewRequest("POST", "/api/v1/jobs?targets=c3", &body)
	r.Header.Set("Content-Type", mw.FormDataContentType())
	got, err := formParams(r)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"action": {"ping"}, "targets": {"c3", "c1,c2"}, "upload": {"file content"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("formParams = %v, want %v", got, want)
	}
}

func TestFormParamsCaseFoldingOrder(t *testing.T) {
	// Keys differing only in case merge; the merged order is deterministic.
	for range 20 {
		r := httptest.NewRequest("GET", "/x?PHASE=A&phase=B&Phase=C", nil)
		got, err := formParams(r)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"A", "C", "B"}; !reflect.DeepEqual(got["phase"], want) {
			t.Fatalf("phase = %v, want %v", got["phase"], want)
		}
	}
}

func TestFormParamsBodyIgnored(t *testing.T) {
	// GET bodies and non-form POST bodies are not read.
	r := httptest.NewRequest("GET", "/x?a=1", strings.NewReader("b=2"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	got, err := formParams(r)
	if err != nil || !reflect.DeepEqual(got, map[string][]string{"a": {"1"}}) {
		t.Errorf("GET: %v, %v", got, err)
	}
	r = httptest.NewRequest("POST", "/x", strings.NewReader(`{"action":"ping"}`))
	r.Header.Set("Content-Type", "application/json")
	got, err = formParams(r)
	if err != nil || len(got) != 0 {
		t.Errorf("JSON POST: %v, %v", got, err)
	}
	b, _ := io.ReadAll(r.Body)
	if string(b) != `{"action":"ping"}` {
		t.Errorf("JSON body consumed: %q left", b)
	}
}

func TestFormParamsTooLarge(t *testing.T) {
	prefix := "a="
	exact := prefix + strings.Repeat("x", maxFormBody-len(prefix))
	r := httptest.NewRequest("POST", "/x", strings.NewReader(exact))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	got, err := formParams(r)
	if err != nil || len(got["a"]) != 1 || len(got["a"][0]) != maxFormBody-2 {
		t.Fatalf("1 MiB body: %v", err)
	}
	for _, ct := range []string{"application/x-www-form-urlencoded", "multipart/form-data; boundary=XYZ"} {
		body := exact + "x"
		if strings.HasPrefix(ct, "multipart") {
			body = "--XYZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + strings.Repeat("x", maxFormBody) + "\r\n--XYZ--\r\n"
		}
		r := httptest.NewRequest("POST", "/x", strings.NewReader(body))
		r.Header.Set("Content-Type", ct)
		_, err := formParams(r)
		if !errors.Is(err, errBodyTooLarge) {
			t.Errorf("%s: error %v, want errBodyTooLarge", ct, err)
		}
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) || mbe.Limit != maxFormBody {
			t.Errorf("%s: error %v does not wrap *http.MaxBytesError", ct, err)
		}
		var pe *paramError
		if errors.As(err, &pe) {
			t.Errorf("%s: too large is a paramError", ct)
		}
	}
}

func TestFormParamsMalformed(t *testing.T) {
	tests := []struct {
		target, ct, body, param string
	}{
		{"/x?a=%zz", "", "", "query string"},
		{"/x", "application/x-www-form-urlencoded", "a=%zz", "request body"},
		{"/x", "multipart/form-data", "", "Content-Type"},
		{"/x", "multipart/form-data; boundary=XYZ", "--XYZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated", "request body"},
		{"/x", "text/plain; ===", "a=1", "Content-Type"},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("POST", tc.target, strings.NewReader(tc.body))
		if tc.ct != "" {
			r.Header.Set("Content-Type", tc.ct)
		}
		_, err := formParams(r)
		checkParamErr(t, tc.target+" "+tc.body, err, tc.param)
	}
}

// ---------------------------------------------------------------------------
// Summary CSV

func TestCSVSummary(t *testing.T) {
	runs := []store.Run{
		{AgentID: "c2", State: store.RunSucceeded, ExitCode: 0, Metrics: json.RawMessage(`{
			"ratio": 0.1000, "note": "a, \"quoted\" note\nline 2",
			"bytes_read": {"server-b": 7, "server-a": 5},
			"big": 12345678901234567890, "huge": 1e400, "neg": -0.0,
			"list": [1, "two", null, true, {"x": 1}, [false]],
			"empty": {}, "none": []}`)},
		{AgentID: "c1", State: store.RunSucceeded, ExitCode: 0},
		{AgentID: "c3", State: store.RunSucceeded, ExitCode: 0, Metrics: json.RawMessage(`{}`)},
		{AgentID: "c4", State: store.RunRunning, ExitCode: 0},
		{AgentID: "c5", State: store.RunFailed, ExitCode: 3, Metrics: json.RawMessage(`{"a":`)},
		{AgentID: "c6,x", State: store.RunTimedOut, ExitCode: -1, Metrics: json.RawMessage(`{"a":{"b":{"c":"d"}}}`)},
	}
	var b bytes.Buffer
	if err := writeSummaryCSV(&b, runs); err != nil {
		t.Fatal(err)
	}
	want := `agent,state,exit_code,metric,value
c1,succeeded,0,,
c2,succeeded,0,big,12345678901234567890
c2,succeeded,0,bytes_read.server-a,5
c2,succeeded,0,bytes_read.server-b,7
c2,succeeded,0,huge,1e400
c2,succeeded,0,list[0],1
c2,succeeded,0,list[1],two
c2,succeeded,0,list[2],
c2,succeeded,0,list[3],true
c2,succeeded,0,list[4].x,1
c2,succeeded,0,list[5][0],false
c2,succeeded,0,neg,-0.0
c2,succeeded,0,note,"a, ""quoted"" note
line 2"
c2,succeeded,0,ratio,0.1000
c3,succeeded,0,,
c4,running,,,
c5,failed,3,,
"c6,x",timed_out,,a.b.c,d
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	// The caller's slice is not reordered.
	if runs[0].AgentID != "c2" {
		t.Error("writeSummaryCSV sorted its argument")
	}
	checkCSV(t, b.Bytes())
}

func TestCSVSummaryNoRuns(t *testing.T) {
	var b bytes.Buffer
	if err := writeSummaryCSV(&b, nil); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "agent,state,exit_code,metric,value\n" {
		t.Errorf("got %q", got)
	}
}

func TestCSVFlattenArrayOrder(t *testing.T) {
	got := flattenMetrics(json.RawMessage(`{"a":[0,1,2,3,4,5,6,7,8,9,10],"b":{"z":1,"a":2,"z":3}}`))
	var names []string
	for _, m := range got {
		names = append(names, m.Name+"="+m.Value)
	}
	want := []string{"a[0]=0", "a[1]=1", "a[2]=2", "a[3]=3", "a[4]=4", "a[5]=5", "a[6]=6", "a[7]=7", "a[8]=8", "a[9]=9", "a[10]=10",
		"b.a=2", "b.z=1", "b.z=3"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("flattened %v\nwant %v", names, want)
	}
	for _, raw := range []string{``, `null`, `[]`, `{}`, `not json`, `{"a":1} {"b":2}`} {
		if got := flattenMetrics(json.RawMessage(raw)); raw != "null" && len(got) != 0 {
			t.Errorf("%q: %v", raw, got)
		}
	}
	// A scalar at the top has an empty name.
	if got := flattenMetrics(json.RawMessage(`"x"`)); !reflect.DeepEqual(got, []metric{{Name: "", Value: "x"}}) {
		t.Errorf("scalar: %v", got)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestCSVSummaryWriteError(t *testing.T) {
	err := writeSummaryCSV(failWriter{}, []store.Run{{AgentID: "c1", State: store.RunSucceeded}})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("error %v", err)
	}
}

// checkCSV parses a summary with encoding/csv: a header and records of
// five fields.
func checkCSV(t testing.TB, b []byte) [][]string {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = 5
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatalf("summary is not valid CSV: %v\n%q", err, b)
	}
	if len(recs) == 0 || !reflect.DeepEqual(recs[0], []string{"agent", "state", "exit_code", "metric", "value"}) {
		t.Fatalf("header %v", recs)
	}
	return recs
}

// Make sure url is used (hrefs are escaped per segment).
func TestUWSResultURLEscaping(t *testing.T) {
	got := resultURL(testBase, "j 1", "c/1/a b#?.txt")
	want := testBase + "/j%201/results/c/1/a%20b%23%3F.txt"
	if got != want {
		t.Errorf("resultURL %s, want %s", got, want)
	}
	if _, err := url.Parse(got); err != nil {
		t.Error(err)
	}
}
