package uwsapi

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// stepsFixture is a test of two steps as loadSteps renders it: "serve"
// (a plain job on the servers) and "download" (a matrix job over two
// servers, after serve is running).
func stepsFixture() fixture {
	steps := []store.Step{{Name: "serve", Job: "j-st-s1"},
		{Name: "download", Job: "j-st-s2", After: "serve", When: store.StepWhenRunning}}
	job := store.Job{ID: "j-st", RunID: "w49", Owner: "alice", Steps: steps, Phase: store.PhaseCompleted,
		CreatedAt: t0, StartedAt: t0.Add(time.Second), EndedAt: t0.Add(time.Minute), Labels: []string{"campaign=w49"}}
	serve := store.Job{ID: "j-st-s1", Parent: "j-st", Action: "serve-stats", Targets: "role=server", Phase: store.PhaseCompleted}
	download := store.Job{ID: "j-st-s2", Parent: "j-st", Action: "download", Targets: "role=client", Phase: store.PhaseCompleted,
		Matrix: []store.MatrixParam{{Name: "server", Values: []string{"s1", nastyParam}}}}
	step := func(name string) store.MatrixParam { return store.MatrixParam{Name: stepParam, Values: []string{name}} }
	server := func(v string) store.MatrixParam { return store.MatrixParam{Name: "server", Values: []string{v}} }
	combos := []jobs.Combination{
		{JobID: "j-st-s1", Values: []store.MatrixParam{step("serve")}},
		{JobID: "j-st-s2-1", Values: []store.MatrixParam{step("download"), server("s1")}},
		{JobID: "j-st-s2-2", Values: []store.MatrixParam{step("download"), server(nastyParam)}},
	}
	leaves := []store.Job{serve,
		{ID: "j-st-s2-1", Parent: "j-st-s2", Action: "download", Phase: store.PhaseCompleted, Params: map[string]string{"server": "s1"}},
		{ID: "j-st-s2-2", Parent: "j-st-s2", Action: "download", Phase: store.PhaseCompleted, Params: map[string]string{"server": nastyParam}},
	}
	run := func(job, agent, metrics string) store.Run {
		return store.Run{JobID: job, AgentID: agent, State: store.RunSucceeded,
			StartedAt: t0.Add(2 * time.Second), EndedAt: t0.Add(50 * time.Second), Metrics: json.RawMessage(metrics)}
	}
	return fixture{
		name: "steps",
		v: &jobView{Base: testBase, Job: job,
			Runs: []store.Run{
				run("j-st-s1", "s1", `{"server":"s1","bytes_served":{"c1":10}}`),
				run("j-st-s2-1", "c1", `{"bytes_read":10}`),
				run("j-st-s2-2", "c1", `{"bytes_read":20}`),
			},
			Matrix: &matrixView{Combos: combos, Children: leaves, RunCombo: []int{0, 1, 2}},
			Steps:  &stepsView{Steps: steps, Jobs: []store.Job{serve, download}}},
		wantParams: [][2]string{{"action", ""}, {"targets", ""}},
		wantResults: []wantResult{
			{"summary", testBase + "/j-st/results/summary", 0, "text/csv"},
			{"matrix.json", testBase + "/j-st/results/matrix.json", 0, "application/json"},
			{"matrix.csv", testBase + "/j-st/results/matrix.csv", 0, "text/csv"},
		},
	}
}

// TestStepsJobInfoXML: a test's jobInfo lists its steps, with their jobs,
// phases, actions, targets and ordering.
func TestStepsJobInfoXML(t *testing.T) {
	doc := string(jobXML(stepsFixture().v))
	for _, want := range []string{
		`<sb:step name="serve" job="j-st-s1" phase="COMPLETED" action="serve-stats" targets="role=server"/>`,
		`<sb:step name="download" job="j-st-s2" phase="COMPLETED" action="download" targets="role=client" after="serve" when="running"/>`,
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("no %s in\n%s", want, doc)
		}
	}
}

// TestMatrixAgainst: each cell is compared with the sum the serving runs
// whose "by" value is the column's report for the row's agent; a cell
// without a serving report disagrees, a column without the parameter
// (another step's) is not compared.
func TestMatrixAgainst(t *testing.T) {
	v := stepsFixture().v
	tab := buildMatrixTable(v, "bytes_read")
	tab.checkAgainst(v, "bytes_served", "server")
	a := tab.Against
	if !slices.Equal(tab.Agents, []string{"c1", "s1"}) || a.Count != 1 {
		t.Fatalf("agents %v, %d disagreements: %+v", tab.Agents, a.Count, a)
	}
	if !slices.Equal(a.Served[0], []string{"", "10", ""}) || !slices.Equal(a.Disagree[0], []bool{false, false, true}) {
		t.Errorf("c1: served %q, disagree %v", a.Served[0], a.Disagree[0])
	}
	if !slices.Equal(a.Disagree[1], []bool{false, false, false}) {
		t.Errorf("s1: disagree %v", a.Disagree[1])
	}
	var b bytes.Buffer
	if err := writeMatrixJSON(&b, tab); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"against":{"metric":"bytes_served","by":"server","disagreements":1}`) ||
		!strings.Contains(b.String(), `"against":[null,10,null],"disagree":[false,false,true]`) {
		t.Errorf("matrix.json: %s", b.String())
	}
	for _, x := range [][2]string{{"1000", "1e3"}, {"", ""}, {"2.50", "2.5"}} {
		if !sameNumber(x[0], x[1]) {
			t.Errorf("sameNumber(%q, %q) = false", x[0], x[1])
		}
	}
	if sameNumber("1", "") || sameNumber("1", "2") {
		t.Error("sameNumber: different numbers are the same")
	}
}

// TestMatrixAgainstCSV: with ?against= the matrix CSV has a "disagree"
// column naming each agent's disagreeing columns, a row of the serving
// side's numbers after each agent's, and the count in the total row;
// text stays inert for spreadsheets. Without it the CSV is unchanged.
func TestMatrixAgainstCSV(t *testing.T) {
	v := stepsFixture().v
	// An agent whose name a spreadsheet would read as a formula, with a
	// report the serving side does not have.
	v.Runs = append(v.Runs, store.Run{JobID: "j-st-s2-1", AgentID: "@c2", State: store.RunSucceeded,
		Metrics: json.RawMessage(`{"bytes_read":5}`)})
	v.Matrix.RunCombo = append(v.Matrix.RunCombo, 1)
	tab := buildMatrixTable(v, "bytes_read")
	var plain bytes.Buffer
	if err := writeMatrixCSV(&plain, tab); err != nil {
		t.Fatal(err)
	}
	tab.checkAgainst(v, "bytes_served", "server")
	var b bytes.Buffer
	if err := writeMatrixCSV(&b, tab); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	plainRows, err := csv.NewReader(&plain).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(plainRows) != 5 || len(plainRows[0]) != 5 || slices.Contains(plainRows[0], "disagree") {
		t.Errorf("CSV without against: %q", plainRows)
	}
	s1, nasty := plainRows[0][2], plainRows[0][3]
	want := [][]string{
		append(slices.Clone(plainRows[0]), "disagree"),
		{"'@c2", "", "5", "", "5", s1},
		{"'@c2 (bytes_served by server)", "", "", "", "", ""},
		{"c1", "", "10", "20", "30", nasty},
		{"c1 (bytes_served by server)", "", "10", "", "", ""},
		{"s1", "", "", "", "", ""},
		{"s1 (bytes_served by server)", "", "", "", "", ""},
		{"total", "", "15", "20", "35", "2"},
	}
	if !slices.EqualFunc(rows, want, slices.Equal[[]string]) {
		t.Errorf("CSV with against:\n got %q\nwant %q", rows, want)
	}
}
