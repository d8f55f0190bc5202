package uwsapi

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"sort"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// The long-format export (docs/jobs.md, "Filtering and export"): the
// results of many jobs as one table a notebook or a spreadsheet reads
// directly, a row per run and metric.

// exportColumns are the columns of the long format, in order.
var exportColumns = []string{"job", "run_id", "definition", "step", "agent", "parameters", "state", "metric", "value"}

// maxExportJobs bounds the jobs one export reads (GET /api/v1/export).
const maxExportJobs = 1000

// exportRow is one row of the long format.
type exportRow struct {
	Job        string // the job a client created (a matrix job, not its child)
	RunID      string
	Definition string
	Step       string            // the action run
	Agent      string            //
	Parameters map[string]string // of the run: its job's, one value each
	State      store.RunState
	Metric     metric // Name "" when the run reported none
}

// exportRows lists the rows of a job (with v's runs loaded): every run
// and each of its metrics (one row with no metric for a run without), by
// combination then agent.
func exportRows(v *jobView) []exportRow {
	var out []exportRow
	for i := range v.Runs {
		r := &v.Runs[i]
		ps := v.Job.Params
		if v.Matrix != nil {
			ps = v.Matrix.Children[v.Matrix.RunCombo[i]].Params
		}
		base := exportRow{Job: v.Job.ID, RunID: v.Job.RunID, Definition: v.Job.Definition, Step: v.Job.Action,
			Agent: r.AgentID, Parameters: ps, State: r.State}
		if s := v.runStep(i); s != "" {
			base.Step = s
		}
		ms := flattenMetrics(r.Metrics)
		if len(ms) == 0 {
			out = append(out, base)
			continue
		}
		for _, m := range ms {
			row := base
			row.Metric = m
			out = append(out, row)
		}
	}
	return out
}

// paramsText is the parameters column: a JSON object, keys sorted ("{}"
// when none).
func paramsText(ps map[string]string) string {
	if len(ps) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(ps) // keys sorted
	return string(b)
}

// writeExportCSV writes rows with a header of exportColumns. Text cells
// are made inert for spreadsheets as in the summary (csvText); numbers are
// written as the agents sent them.
func writeExportCSV(w io.Writer, rows []exportRow) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(exportColumns); err != nil {
		return err
	}
	for _, r := range rows {
		value := r.Metric.Value
		if !r.Metric.Number {
			value = csvText(value)
		}
		rec := []string{r.Job, csvText(r.RunID), csvText(r.Definition), csvText(r.Step), csvText(r.Agent),
			csvText(paramsText(r.Parameters)), string(r.State), csvText(r.Metric.Name), value}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

type jsonExportRow struct {
	Job        string            `json:"job"`
	RunID      string            `json:"runId"`
	Definition string            `json:"definition"`
	Step       string            `json:"step"`
	Agent      string            `json:"agent"`
	Parameters map[string]string `json:"parameters"`
	State      string            `json:"state"`
	Metric     *string           `json:"metric"` // null: the run reported no metric
	// Value is a JSON number as the agent sent it, a string, or null.
	Value json.RawMessage `json:"value"`
}

// writeExportJSON writes {"rows":[{"job","runId","definition","step",
// "agent","parameters","state","metric","value"}]}.
func writeExportJSON(w io.Writer, rows []exportRow) error {
	out := make([]jsonExportRow, 0, len(rows))
	for _, r := range rows {
		jr := jsonExportRow{Job: r.Job, RunID: r.RunID, Definition: r.Definition, Step: r.Step, Agent: r.Agent,
			Parameters: r.Parameters, State: string(r.State), Value: json.RawMessage("null")}
		if jr.Parameters == nil {
			jr.Parameters = map[string]string{}
		}
		if r.Metric.Name != "" || r.Metric.Value != "" {
			name := r.Metric.Name
			jr.Metric = &name
			switch {
			case r.Metric.Number:
				jr.Value = json.RawMessage(r.Metric.Value)
			default:
				b, _ := json.Marshal(r.Metric.Value)
				jr.Value = b
			}
		}
		out = append(out, jr)
	}
	return json.NewEncoder(w).Encode(struct {
		Rows []jsonExportRow `json:"rows"`
	}{out})
}

// exportOf reads the rows of jobs, in their order.
func (h *API) exportOf(ctx context.Context, js []store.Job) ([]exportRow, error) {
	var rows []exportRow
	for _, j := range js {
		v, err := h.view(ctx, j)
		if err != nil {
			return nil, err
		}
		rows = append(rows, exportRows(v)...)
	}
	return rows, nil
}

// serveExport answers GET /api/v1/export: the long format of the jobs the
// job list's filters select (RUNID, LABEL, DEFINITION, PHASE, AFTER,
// LAST; at most maxExportJobs), as CSV (the default, or FORMAT=csv) or
// JSON (FORMAT=json, or Accept: application/json without FORMAT).
func (h *API) serveExport(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	q, err := formParams(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	format, ok := one(w, q, "format")
	if !ok {
		return
	}
	delete(q, "format")
	switch format {
	case "":
		format = "csv"
		if !wantsXML(r) {
			format = "json"
		}
	case "csv", "json":
	default:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "FORMAT must be csv or json")
		return
	}
	js, ok := h.listJobs(w, r, c, q, func(f *store.JobFilter) { f.Limit = maxExportJobs })
	if !ok {
		return
	}
	sort.SliceStable(js, func(a, b int) bool { return js[a].CreatedAt.Before(js[b].CreatedAt) })
	rows, err := h.exportOf(r.Context(), js)
	if err != nil {
		h.storeError(w, r, "read runs", err)
		return
	}
	var b bytes.Buffer
	if format == "csv" {
		writeExportCSV(&b, rows)
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="switchboard-export.csv"`)
	} else {
		writeExportJSON(&b, rows)
		w.Header().Set("Content-Type", contentTypeJSON)
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.newTransfer(w).writer().Write(b.Bytes())
}
