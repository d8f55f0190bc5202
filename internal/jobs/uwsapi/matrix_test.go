package uwsapi

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// matrixFixture is a finished matrix job of two servers × two agents,
// with labels and a definition, whose strings need escaping.
func matrixFixture() fixture {
	matrix := []store.MatrixParam{{Name: "server", Values: []string{"s1", nastyParam}}}
	job := store.Job{ID: "j-mx", RunID: "w48", Owner: "alice", Action: "download", Targets: "role=client",
		Params: map[string]string{"count": "2"}, Matrix: matrix, Phase: store.PhaseCompleted,
		CreatedAt: t0, StartedAt: t0.Add(time.Second), EndedAt: t0.Add(time.Minute),
		Labels: []string{"campaign=w48", "site=<UNL>"}, Definition: "nightly & co", DefinitionVersion: 3}
	combos := []jobs.Combination{
		{JobID: "j-mx-1", Values: []store.MatrixParam{{Name: "server", Values: []string{"s1"}}}},
		{JobID: "j-mx-2", Values: []store.MatrixParam{{Name: "server", Values: []string{nastyParam}}}},
	}
	kids := []store.Job{
		{ID: "j-mx-1", Parent: "j-mx", Phase: store.PhaseCompleted, Params: map[string]string{"count": "2", "server": "s1"}},
		{ID: "j-mx-2", Parent: "j-mx", Phase: store.PhaseCompleted, Params: map[string]string{"count": "2", "server": nastyParam}},
	}
	run := func(job, agent string, n int) store.Run {
		return store.Run{JobID: job, AgentID: agent, State: store.RunSucceeded, ExitCode: 0,
			StartedAt: t0.Add(2 * time.Second), EndedAt: t0.Add(50 * time.Second),
			Metrics: json.RawMessage(`{"bytes_read":` + strings.Repeat("9", n) + `}`)}
	}
	return fixture{
		name: "matrix",
		v: &jobView{Base: testBase, Job: job,
			Runs:   []store.Run{run("j-mx-1", "c1", 1), run("j-mx-1", "c2", 2), run("j-mx-2", "c1", 3), run("j-mx-2", "c2", 20)},
			Matrix: &matrixView{Combos: combos, Children: kids, RunCombo: []int{0, 0, 1, 1}}},
		wantParams: [][2]string{{"action", "download"}, {"targets", "role=client"}, {"count", "2"},
			{"server", "s1"}, {"server", nastyParam}},
		wantResults: []wantResult{
			{"summary", testBase + "/j-mx/results/summary", 0, "text/csv"},
			{"matrix.json", testBase + "/j-mx/results/matrix.json", 0, "application/json"},
			{"matrix.csv", testBase + "/j-mx/results/matrix.csv", 0, "text/csv"},
		},
	}
}

// TestMatrixTableTotals: totals of integers are exact beyond float64
// (big integers), a missing cell is empty (null in JSON) and left out of
// the totals, and a header cell that would be a formula is made inert.
func TestMatrixTableTotals(t *testing.T) {
	f := matrixFixture()
	f.v.Runs = f.v.Runs[:3] // c2 has no run for the second server
	f.v.Matrix.RunCombo = f.v.Matrix.RunCombo[:3]
	f.v.Matrix.Combos[1].Values[0].Values[0] = "=HYPERLINK(1)"
	tab := buildMatrixTable(f.v, "")
	var b bytes.Buffer
	if err := writeMatrixCSV(&b, tab); err != nil {
		t.Fatal(err)
	}
	want := "agent,s1,'=HYPERLINK(1),total\n" +
		"c1,9,999,1008\n" +
		"c2,99,,99\n" +
		"total,108,999,1107\n"
	if b.String() != want {
		t.Fatalf("CSV:\n%s\nwant\n%s", b.String(), want)
	}
	f = matrixFixture()
	b.Reset()
	if err := writeMatrixJSON(&b, buildMatrixTable(f.v, "bytes_read")); err != nil {
		t.Fatal(err)
	}
	// 99999999999999999999 + 99 is not a float64 sum.
	if !strings.Contains(b.String(), `"agent":"c2","cells":[99,99999999999999999999],"total":100000000000000000098}`) {
		t.Fatalf("JSON: %s", b.String())
	}
	b.Reset()
	writeMatrixJSON(&b, buildMatrixTable(f.v, "no_such_metric"))
	if !strings.Contains(b.String(), `"cells":[null,null],"total":null`) || !strings.Contains(b.String(), `"total":null}`) {
		t.Fatalf("JSON of a metric no run reports: %s", b.String())
	}
}
