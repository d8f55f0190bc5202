package uwsapi

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"strconv"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Comparison between two jobs (docs/jobs.md, "Comparing two runs"): GET
// /api/v1/compare?base=A&other=B[&metric=M][&format=json|csv] puts the
// matrix tables of one metric of two jobs (two runs of a definition,
// typically) side by side: cells are matched by agent and by combination
// label (a job that is not a matrix job has one column, ""), and each has
// the difference other − base and the ratio other / base.

// plainMatrix makes a job that is not a matrix job look like one of one
// combination (no parameters), so that its table has one column.
func plainMatrix(v *jobView) {
	if v.Matrix != nil {
		return
	}
	mv := &matrixView{Combos: []jobs.Combination{{JobID: v.Job.ID}}, Children: []store.Job{v.Job},
		RunCombo: make([]int, len(v.Runs))}
	v.Matrix = mv
}

// difference returns b − a of two JSON numbers: exact when both are
// integers, else as float64; "" when either is missing.
func difference(a, b string) string {
	if a == "" || b == "" {
		return ""
	}
	x, okx := new(big.Int).SetString(a, 10)
	y, oky := new(big.Int).SetString(b, 10)
	if okx && oky {
		return new(big.Int).Sub(y, x).String()
	}
	fa, erra := strconv.ParseFloat(a, 64)
	fb, errb := strconv.ParseFloat(b, 64)
	if erra != nil || errb != nil {
		return ""
	}
	return strconv.FormatFloat(fb-fa, 'g', -1, 64)
}

// ratio returns b / a of two JSON numbers; "" when either is missing or a
// is zero.
func ratio(a, b string) string {
	fa, erra := strconv.ParseFloat(a, 64)
	fb, errb := strconv.ParseFloat(b, 64)
	if a == "" || b == "" || erra != nil || errb != nil || fa == 0 {
		return ""
	}
	return strconv.FormatFloat(fb/fa, 'g', 6, 64)
}

// compareCell is one cell of a comparison (values as JSON numbers, ""
// for none).
type compareCell struct {
	Agent, Column     string // "total" rows and columns are the totals
	Base, Other       string
	Difference, Ratio string
}

// comparison is two tables side by side.
type comparison struct {
	Base, Other string // job ids
	Metric      string
	Columns     []string // combination labels, base's first, then other's new ones
	Agents      []string // base's first, then other's new ones
	Cells       []compareCell
}

// compareTables lines up two tables of one metric by agent and column
// label, with the row and column totals and the grand total as cells of
// the agent or column "total".
func compareTables(a, b matrixTable) comparison {
	cmp := comparison{Base: a.Job, Other: b.Job, Metric: a.Metric}
	type grid struct {
		cells map[[2]string]string
		rows  map[string]string
		cols  map[string]string
		total string
	}
	load := func(t matrixTable) grid {
		g := grid{cells: map[[2]string]string{}, rows: map[string]string{}, cols: map[string]string{}, total: t.total()}
		for c, col := range t.Columns {
			g.cols[col.Label()] = t.colTotal(c)
		}
		for r, agent := range t.Agents {
			g.rows[agent] = t.rowTotal(r)
			for c, col := range t.Columns {
				g.cells[[2]string{agent, col.Label()}] = t.Cells[r][c]
			}
		}
		return g
	}
	ga, gb := load(a), load(b)
	seen := map[string]bool{}
	for _, t := range []matrixTable{a, b} {
		for _, col := range t.Columns {
			if l := col.Label(); !seen["c"+l] {
				seen["c"+l] = true
				cmp.Columns = append(cmp.Columns, l)
			}
		}
		for _, agent := range t.Agents {
			if !seen["a"+agent] {
				seen["a"+agent] = true
				cmp.Agents = append(cmp.Agents, agent)
			}
		}
	}
	cell := func(agent, col, x, y string) {
		cmp.Cells = append(cmp.Cells, compareCell{Agent: agent, Column: col, Base: x, Other: y,
			Difference: difference(x, y), Ratio: ratio(x, y)})
	}
	for _, agent := range cmp.Agents {
		for _, col := range cmp.Columns {
			k := [2]string{agent, col}
			cell(agent, col, ga.cells[k], gb.cells[k])
		}
		cell(agent, "total", ga.rows[agent], gb.rows[agent])
	}
	for _, col := range cmp.Columns {
		cell("total", col, ga.cols[col], gb.cols[col])
	}
	cell("total", "total", ga.total, gb.total)
	return cmp
}

type jsonCompareCell struct {
	Agent      string     `json:"agent"`
	Column     string     `json:"column"`
	Base       jsonNumber `json:"base"`
	Other      jsonNumber `json:"other"`
	Difference jsonNumber `json:"difference"`
	Ratio      jsonNumber `json:"ratio"`
}

// writeCompareJSON writes {"base","other","metric","columns","agents",
// "cells":[{"agent","column","base","other","difference","ratio"}]}
// (numbers, null when missing; the totals are the cells whose agent or
// column is "total").
func writeCompareJSON(w io.Writer, c comparison) error {
	doc := struct {
		Base    string            `json:"base"`
		Other   string            `json:"other"`
		Metric  string            `json:"metric"`
		Columns []string          `json:"columns"`
		Agents  []string          `json:"agents"`
		Cells   []jsonCompareCell `json:"cells"`
	}{c.Base, c.Other, c.Metric, c.Columns, c.Agents, []jsonCompareCell{}}
	if doc.Columns == nil {
		doc.Columns = []string{}
	}
	if doc.Agents == nil {
		doc.Agents = []string{}
	}
	for _, x := range c.Cells {
		doc.Cells = append(doc.Cells, jsonCompareCell{x.Agent, x.Column, jsonNumber(x.Base), jsonNumber(x.Other),
			jsonNumber(x.Difference), jsonNumber(x.Ratio)})
	}
	return json.NewEncoder(w).Encode(doc)
}

// writeCompareCSV writes the header agent,column,base,other,difference,
// ratio and a row per cell (text cells made inert as in the summary).
func writeCompareCSV(w io.Writer, c comparison) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"agent", "column", "base", "other", "difference", "ratio"}); err != nil {
		return err
	}
	for _, x := range c.Cells {
		if err := cw.Write([]string{csvText(x.Agent), csvText(x.Column), x.Base, x.Other, x.Difference, x.Ratio}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// serveCompare answers GET /api/v1/compare.
func (h *API) serveCompare(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	q := r.URL.Query()
	for _, name := range []string{"base", "other", "metric", "format"} {
		if len(q[name]) > 1 {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", name+" is given more than once")
			return
		}
	}
	if q.Get("base") == "" || q.Get("other") == "" {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "give base and other, the ids of the two jobs")
		return
	}
	format := q.Get("format")
	switch format {
	case "":
		format = "json"
	case "json", "csv":
	default:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "format must be json or csv")
		return
	}
	metric, err := matrixMetricParam(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	var tables [2]matrixTable
	for i, name := range []string{"base", "other"} {
		j, ok := h.loadJobID(w, r, c, q.Get(name))
		if !ok {
			return
		}
		v, err := h.view(r.Context(), j)
		if err != nil {
			h.storeError(w, r, "read runs", err)
			return
		}
		plainMatrix(v)
		tables[i] = buildMatrixTable(v, metric)
		if metric == "" {
			metric = tables[i].Metric // the other job is read with base's metric
		}
	}
	cmp := compareTables(tables[0], tables[1])
	var b bytes.Buffer
	if format == "csv" {
		writeCompareCSV(&b, cmp)
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="`+cmp.Base+`-vs-`+cmp.Other+`.csv"`)
	} else {
		writeCompareJSON(&b, cmp)
		w.Header().Set("Content-Type", contentTypeJSON)
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.newTransfer(w).writer().Write(b.Bytes())
}
