package uwsapi

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Matrix jobs in the UWS binding (docs/jobs.md, "Matrix parameters" and
// "The matrix result").

// Result ids of a matrix job's table of one metric (?metric=NAME).
const (
	MatrixJSONResult = "matrix.json"
	MatrixCSVResult  = "matrix.csv"
)

// paramValues is a parameter's value in a JSON creation request: a string,
// or an array of strings (a matrix parameter).
type paramValues []string

func (p *paramValues) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*p = paramValues{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("a parameter's value must be a string or an array of strings")
	}
	if many == nil {
		many = []string{}
	}
	*p = many
	return nil
}

// splitMatrix separates the parameters given one value from those given
// several (the matrix, sorted by name). A parameter given as an array of
// one value is a plain one; an empty array is a matrix parameter without
// values (refused by the state machine, naming it).
func splitMatrix(given map[string]paramValues) (map[string]string, []store.MatrixParam) {
	plain := map[string]string{}
	var matrix []store.MatrixParam
	for k, vs := range given {
		if len(vs) == 1 {
			plain[k] = vs[0]
			continue
		}
		matrix = append(matrix, store.MatrixParam{Name: k, Values: slices.Clone(vs)})
	}
	sort.Slice(matrix, func(a, b int) bool { return matrix[a].Name < matrix[b].Name })
	return plain, matrix
}

// refuseChild answers 403 for a change asked of a matrix job's child or a
// test's step: its parent is what a client runs, aborts, changes and
// deletes.
func refuseChild(w http.ResponseWriter, j store.Job) bool {
	if j.Parent == "" {
		return false
	}
	apierr.WriteNew(w, http.StatusForbidden, "matrix_child", "job "+j.ID+" is part of job "+j.Parent+" (one of its combinations or steps): change that job")
	return true
}

// matrixView is what a matrix job's rendering adds: its combinations and,
// for each run in jobView.Runs, the combination it belongs to.
type matrixView struct {
	Combos   []jobs.Combination
	Children []store.Job // by combination
	RunCombo []int       // index in Combos of each run of jobView.Runs
}

// loadMatrix fills v.Runs and v.Matrix from a matrix job's children.
func (h *API) loadMatrix(ctx context.Context, v *jobView) error {
	combos, kids, err := h.jobs.Children(ctx, v.Job)
	if err != nil {
		return err
	}
	mv := &matrixView{Combos: combos, Children: kids}
	v.Runs = nil
	for i, k := range kids {
		runs, err := h.jobs.Runs(ctx, k.ID)
		if err != nil {
			return err
		}
		for range runs {
			mv.RunCombo = append(mv.RunCombo, i)
		}
		v.Runs = append(v.Runs, runs...)
	}
	v.Matrix = mv
	return nil
}

// runName names run i of v: its agent, and on a matrix job its
// combination ("c1 [server=http://s1/f]").
func (v *jobView) runName(i int) string {
	if v.Matrix == nil {
		return v.Runs[i].AgentID
	}
	return v.Runs[i].AgentID + " [" + v.Matrix.Combos[v.Matrix.RunCombo[i]].Label() + "]"
}

// comboParams returns a combination's values as ordered parameters.
func comboParams(c jobs.Combination) orderedParams {
	out := make(orderedParams, len(c.Values))
	for i, p := range c.Values {
		out[i] = param{p.Name, p.Values[0]}
	}
	return out
}

// ---------------------------------------------------------------------------
// The matrix result: agents × combinations for one metric

// matrixTable is a matrix job's table of one metric: a row per agent that
// has a run, a column per combination, totals per row and column.
type matrixTable struct {
	Job        string
	Metric     string
	Parameters []string // the matrix parameters' names
	Columns    []jobs.Combination
	Agents     []string
	// Cells[row][col] is the metric's value in that run as the agent sent
	// it (a JSON number), "" when the run is missing, has not reported
	// the metric or reported something that is not a number.
	Cells [][]string
	// Against is set when the cells are checked against the serving
	// side's reports (?against=&by=, disagree.go).
	Against *againstCheck
}

// defaultMatrixMetric is the metric the matrix result shows when the
// request names none and the runs report it.
const defaultMatrixMetric = "bytes_read"

// buildMatrixTable computes the table of metric over v's runs. An empty
// metric picks defaultMatrixMetric if any run reports it, else the first
// numeric metric by name.
func buildMatrixTable(v *jobView, metric string) matrixTable {
	mv := v.Matrix
	t := matrixTable{Job: v.Job.ID, Columns: mv.Combos, Parameters: v.matrixParameters()}
	values := make([]map[string]string, len(v.Runs)) // metric → number, per run
	names := map[string]bool{}
	for i := range v.Runs {
		values[i] = map[string]string{}
		for _, m := range flattenMetrics(v.Runs[i].Metrics) {
			if m.Number {
				values[i][m.Name] = m.Value
				names[m.Name] = true
			}
		}
	}
	if metric == "" {
		if names[defaultMatrixMetric] || len(names) == 0 {
			metric = defaultMatrixMetric
		} else {
			all := make([]string, 0, len(names))
			for n := range names {
				all = append(all, n)
			}
			sort.Strings(all)
			metric = all[0]
		}
	}
	t.Metric = metric
	row := map[string]int{}
	for i := range v.Runs {
		a := v.Runs[i].AgentID
		if _, ok := row[a]; !ok {
			row[a] = len(t.Agents)
			t.Agents = append(t.Agents, a)
		}
	}
	sort.Strings(t.Agents)
	for i, a := range t.Agents {
		row[a] = i
	}
	t.Cells = make([][]string, len(t.Agents))
	for i := range t.Cells {
		t.Cells[i] = make([]string, len(t.Columns))
	}
	for i := range v.Runs {
		t.Cells[row[v.Runs[i].AgentID]][mv.RunCombo[i]] = values[i][metric]
	}
	return t
}

// sum adds JSON numbers exactly when they are all integers (as big
// integers), else as float64; "" when there are none.
func sum(nums []string) string {
	total := new(big.Int)
	var f float64
	n, integer := 0, true
	for _, s := range nums {
		if s == "" {
			continue
		}
		n++
		if x, ok := new(big.Int).SetString(s, 10); ok && integer {
			total.Add(total, x)
		} else {
			integer = false
		}
		if x, err := strconv.ParseFloat(s, 64); err == nil {
			f += x
		}
	}
	switch {
	case n == 0:
		return ""
	case integer:
		return total.String()
	case math.IsInf(f, 0) || math.IsNaN(f):
		return ""
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func (t *matrixTable) rowTotal(r int) string { return sum(t.Cells[r]) }

func (t *matrixTable) colTotal(c int) string {
	col := make([]string, len(t.Cells))
	for r := range t.Cells {
		col[r] = t.Cells[r][c]
	}
	return sum(col)
}

func (t *matrixTable) total() string {
	var all []string
	for _, row := range t.Cells {
		all = append(all, row...)
	}
	return sum(all)
}

// jsonNumber is a JSON number kept as the text the agent sent; "" is
// null.
type jsonNumber string

func (n jsonNumber) MarshalJSON() ([]byte, error) {
	if n == "" {
		return []byte("null"), nil
	}
	return []byte(n), nil
}

type jsonMatrixColumn struct {
	Job        string        `json:"job"`
	Label      string        `json:"label"`
	Parameters orderedParams `json:"parameters"`
	Total      jsonNumber    `json:"total"`
}

type jsonMatrixRow struct {
	Agent string       `json:"agent"`
	Cells []jsonNumber `json:"cells"`
	Total jsonNumber   `json:"total"`
	// Against and Disagree, with ?against=: the serving side's number
	// for each cell, and whether the cell disagrees with it.
	Against  []jsonNumber `json:"against,omitempty"`
	Disagree []bool       `json:"disagree,omitempty"`
}

type jsonMatrix struct {
	JobID      string             `json:"jobId"`
	Metric     string             `json:"metric"`
	Parameters []string           `json:"parameters"`
	Columns    []jsonMatrixColumn `json:"columns"`
	Rows       []jsonMatrixRow    `json:"rows"`
	Total      jsonNumber         `json:"total"`
	Against    *jsonAgainst       `json:"against,omitempty"`
}

// writeMatrixJSON writes t as
// {"jobId","metric","parameters":[names],"columns":[{"job","label",
// "parameters","total"}],"rows":[{"agent","cells":[n|null],"total"}],
// "total"}; with t.Against, each row also has "against":[n|null] and
// "disagree":[bool], and the document "against":{"metric","by",
// "disagreements"}.
func writeMatrixJSON(w io.Writer, t matrixTable) error {
	doc := jsonMatrix{JobID: t.Job, Metric: t.Metric, Parameters: t.Parameters, Total: jsonNumber(t.total()),
		Columns: []jsonMatrixColumn{}, Rows: []jsonMatrixRow{}}
	if doc.Parameters == nil {
		doc.Parameters = []string{}
	}
	for c, col := range t.Columns {
		doc.Columns = append(doc.Columns, jsonMatrixColumn{Job: col.JobID, Label: col.Label(),
			Parameters: comboParams(col), Total: jsonNumber(t.colTotal(c))})
	}
	for r, a := range t.Agents {
		row := jsonMatrixRow{Agent: a, Cells: make([]jsonNumber, len(t.Columns)), Total: jsonNumber(t.rowTotal(r))}
		for c := range t.Columns {
			row.Cells[c] = jsonNumber(t.Cells[r][c])
		}
		if a := t.Against; a != nil {
			row.Against, row.Disagree = make([]jsonNumber, len(t.Columns)), a.Disagree[r]
			for c := range t.Columns {
				row.Against[c] = jsonNumber(a.Served[r][c])
			}
		}
		doc.Rows = append(doc.Rows, row)
	}
	if a := t.Against; a != nil {
		doc.Against = &jsonAgainst{Metric: a.Metric, By: a.By, Disagreements: a.Count}
	}
	return json.NewEncoder(w).Encode(doc)
}

// writeMatrixCSV writes t as CSV: a header "agent", one column per
// combination (its value when the matrix has one parameter, else its
// label), "total"; a row per agent; a last row "total". Text cells are
// made inert for spreadsheets as in the summary (csvText); numbers are
// written as the agents sent them.
//
// With t.Against the table gains a last column "disagree" and, after each
// agent's row, a row "AGENT (METRIC by BY)" with the serving side's
// numbers (its total and marker cells empty). The agent's "disagree" cell
// lists the headers of its disagreeing columns, separated by
// matrixCSVDisagreeSep ("" when none); the total row's is the number of
// disagreeing cells. Number cells stay plain numbers for spreadsheets.
func writeMatrixCSV(w io.Writer, t matrixTable) error {
	cw := csv.NewWriter(w)
	head := []string{"agent"}
	for _, col := range t.Columns {
		name := col.Label()
		if len(col.Values) == 1 {
			name = col.Values[0].Values[0]
		}
		head = append(head, name)
	}
	header := []string{"agent"}
	for _, name := range head[1:] {
		header = append(header, csvText(name))
	}
	header = append(header, "total")
	a := t.Against
	if a != nil {
		header = append(header, "disagree")
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	for r, agent := range t.Agents {
		rec := append([]string{csvText(agent)}, t.Cells[r]...)
		rec = append(rec, t.rowTotal(r))
		if a == nil {
			if err := cw.Write(rec); err != nil {
				return err
			}
			continue
		}
		var disagreeing []string
		for c := range t.Columns {
			if a.Disagree[r][c] {
				disagreeing = append(disagreeing, head[c+1])
			}
		}
		rec = append(rec, csvText(strings.Join(disagreeing, matrixCSVDisagreeSep)))
		served := append([]string{csvText(fmt.Sprintf("%s (%s by %s)", agent, a.Metric, a.By))}, a.Served[r]...)
		if err := cw.WriteAll([][]string{rec, append(served, "", "")}); err != nil {
			return err
		}
	}
	totals := []string{"total"}
	for c := range t.Columns {
		totals = append(totals, t.colTotal(c))
	}
	totals = append(totals, t.total())
	if a != nil {
		totals = append(totals, strconv.Itoa(a.Count))
	}
	if err := cw.Write(totals); err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}

// matrixCSVDisagreeSep separates the disagreeing columns' headers in the
// "disagree" cell of matrix.csv.
const matrixCSVDisagreeSep = "; "

// matrixMetricParam reads ?metric= of a matrix result request.
func matrixMetricParam(r *http.Request) (string, error) {
	vs := r.URL.Query()["metric"]
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", &paramError{"metric", "is given more than once"}
	case len(vs[0]) > 256:
		return "", &paramError{"metric", "is longer than 256 bytes"}
	}
	return vs[0], nil
}

// serveMatrixResult answers the matrix.json and matrix.csv results.
func (h *API) serveMatrixResult(w http.ResponseWriter, r *http.Request, v *jobView, id string) {
	metric, err := matrixMetricParam(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	against, by, err := againstParams(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	t := buildMatrixTable(v, metric)
	if against != "" {
		t.checkAgainst(v, against, by)
	}
	var b bytes.Buffer
	if id == MatrixCSVResult {
		writeMatrixCSV(&b, t)
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-matrix.csv"`, v.Job.ID))
	} else {
		writeMatrixJSON(&b, t)
		w.Header().Set("Content-Type", contentTypeJSON)
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.newTransfer(w).writer().Write(b.Bytes())
}
