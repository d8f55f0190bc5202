package uwsapi

import (
	"math/big"
	"net/http"
)

// Client and server disagreement in the matrix result (docs/jobs.md, "The
// matrix result"): ?against=METRIC&by=PARAM compares each cell (what the
// row's agent reported, e.g. bytes_read from one server) with what the
// serving side reported for it. A serving run is any run of the job (on a
// test of several steps typically the server step's) that reports a
// metric named PARAM (the value of the matrix parameter PARAM it serves,
// e.g. its URL) and METRIC keyed by agent ({"bytes_served": {"c1": 5}},
// the metric METRIC.c1). The cell (agent A, column C) is compared with
// the sum of METRIC.A over the serving runs whose PARAM is C's value of
// PARAM; they disagree when one side has a number and the other none, or
// the numbers differ.

// againstCheck is the comparison of a matrix table's cells with the
// serving side's reports.
type againstCheck struct {
	Metric, By string
	// Served[row][col] is the serving side's number for the cell ("":
	// none); Disagree[row][col] whether it differs from the cell.
	Served   [][]string
	Disagree [][]bool
	Count    int // cells that disagree
}

// checkAgainst fills t.Against from v's runs.
func (t *matrixTable) checkAgainst(v *jobView, metric, by string) {
	a := &againstCheck{Metric: metric, By: by}
	// For each serving value of by, each agent's reports as numbers.
	served := map[string]map[string][]string{}
	for i := range v.Runs {
		ms := flattenMetrics(v.Runs[i].Metrics)
		key, ok := "", false
		for _, m := range ms {
			if m.Name == by {
				key, ok = m.Value, true
			}
		}
		if !ok {
			continue
		}
		if served[key] == nil {
			served[key] = map[string][]string{}
		}
		for _, agent := range t.Agents {
			name := metric + "." + escapeMetricKey(agent)
			for _, m := range ms {
				if m.Name == name && m.Number {
					served[key][agent] = append(served[key][agent], m.Value)
				}
			}
		}
	}
	a.Served = make([][]string, len(t.Agents))
	a.Disagree = make([][]bool, len(t.Agents))
	for r, agent := range t.Agents {
		a.Served[r] = make([]string, len(t.Columns))
		a.Disagree[r] = make([]bool, len(t.Columns))
		for c, col := range t.Columns {
			value, has := "", false
			for _, p := range col.Values {
				if p.Name == by {
					value, has = p.Values[0], true
				}
			}
			if !has {
				continue // a column not served by anyone (another step's)
			}
			a.Served[r][c] = sum(served[value][agent])
			if cell := t.Cells[r][c]; (cell != "" || a.Served[r][c] != "") && !sameNumber(cell, a.Served[r][c]) {
				a.Disagree[r][c] = true
				a.Count++
			}
		}
	}
	t.Against = a
}

// sameNumber reports whether two JSON numbers (or "", none) are equal as
// numbers ("1000" and "1e3" are).
func sameNumber(x, y string) bool {
	if x == "" || y == "" {
		return x == y
	}
	a, okA := new(big.Rat).SetString(x)
	b, okB := new(big.Rat).SetString(y)
	if !okA || !okB {
		return x == y
	}
	return a.Cmp(b) == 0
}

// againstParams reads ?against= and ?by= of a matrix result request: both
// or neither.
func againstParams(r *http.Request) (metric, by string, err error) {
	if metric, err = oneQueryParam(r, "against"); err != nil {
		return "", "", err
	}
	if by, err = oneQueryParam(r, "by"); err != nil {
		return "", "", err
	}
	switch {
	case metric != "" && by == "":
		return "", "", &paramError{"by", "is needed with against: the parameter whose value each serving run reports"}
	case metric == "" && by != "":
		return "", "", &paramError{"against", "is needed with by: the serving side's metric keyed by agent"}
	}
	return metric, by, nil
}

// oneQueryParam reads a query parameter given at most once, of at most
// 256 bytes.
func oneQueryParam(r *http.Request, name string) (string, error) {
	vs := r.URL.Query()[name]
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", &paramError{name, "is given more than once"}
	case len(vs[0]) > 256:
		return "", &paramError{name, "is longer than 256 bytes"}
	}
	return vs[0], nil
}

type jsonAgainst struct {
	Metric        string `json:"metric"`
	By            string `json:"by"`
	Disagreements int    `json:"disagreements"`
}
