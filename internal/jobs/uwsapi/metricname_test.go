package uwsapi

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// leaves walks a decoded JSON value (numbers as json.Number) and returns
// each leaf's path and text as the summary writes it: the reference the
// CSV is read back against.
func leaves(v any, path []metricStep, out *[][2]any) {
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			leaves(t[k], append(slices.Clone(path), metricStep{Key: k}), out)
		}
	case []any:
		for i, e := range t {
			leaves(e, append(slices.Clone(path), metricStep{Index: i, IsIndex: true}), out)
		}
	case nil:
		*out = append(*out, [2]any{path, ""})
	default:
		*out = append(*out, [2]any{path, fmt.Sprint(t)})
	}
}

// readSummary reads a summary CSV back the way docs/jobs.md tells a reader
// to: strip the formula guard from text cells, then split each metric
// name into its path.
func readSummary(t *testing.T, b []byte) (paths [][2]any) {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("summary is not CSV: %v\n%s", err, b)
	}
	unguard := func(s string) string {
		if len(s) > 1 && s[0] == '\'' && strings.ContainsRune("=+-@\t\r", rune(s[1])) {
			return s[1:]
		}
		return s
	}
	for _, row := range rows[1:] {
		name := row[3]
		if strings.HasPrefix(name, "'") { // a name never begins with ': the guard
			name = name[1:]
		}
		path, err := parseMetricName(name)
		if err != nil {
			t.Fatalf("metric name %q (cell %q) does not parse: %v", name, row[3], err)
		}
		paths = append(paths, [2]any{path, unguard(row[4])})
	}
	return paths
}

// TestSummaryCSVNamesRoundTrip: every metric name of the summary splits
// back into the keys and indices of the metrics object, whatever the keys
// hold: dots (a host:port), brackets, backslashes, quotes, formula
// characters, nothing. Before, {"bytes_read":{"127.0.0.1:8080":5}} gave
// bytes_read.127.0.0.1:8080, which splits five ways.
func TestSummaryCSVNamesRoundTrip(t *testing.T) {
	for _, metrics := range []string{
		`{"bytes_read":{"127.0.0.1:8080":5,"[::1]:9000":6},"bytes_read.127":{"0":{"0":{"1:8080":7}}}}`,
		`{"a\\b":1,"a\\.b":2,"x[0]":[3,{"y]":4}],"'q":5,"q'":6,"=cmd":7,"-1":8,"":9,"e":{"":{"":10}}}`,
		`{"rtt":[[1,2],[3]],"ok":true,"none":null,"s":"=HYPERLINK(1)","ünï.côde":0.5}`,
	} {
		var v any
		dec := json.NewDecoder(strings.NewReader(metrics))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		var want [][2]any
		leaves(v, nil, &want)
		var b bytes.Buffer
		if err := writeSummaryCSV(&b, []store.Run{{AgentID: "c1", State: store.RunSucceeded, Metrics: json.RawMessage(metrics)}}); err != nil {
			t.Fatal(err)
		}
		got := readSummary(t, b.Bytes())
		if !reflect.DeepEqual(got, want) {
			t.Errorf("metrics %s\nread back %v\nwant      %v\nCSV:\n%s", metrics, got, want, b.String())
		}
	}
	if got := formatMetricName([]metricStep{{Key: "bytes_read"}, {Key: "127.0.0.1:8080"}}); got != `bytes_read.127\.0\.0\.1:8080` {
		t.Errorf("documented example: %s", got)
	}
}

// FuzzMetricName: any path formats to a name that parses back to it, and
// any name that parses formats back to itself (one spelling per path).
func FuzzMetricName(f *testing.F) {
	f.Add("bytes_read", "127.0.0.1:8080", 3, `a\.b[0].c`)
	f.Add("", "'", 0, `\'x`)
	f.Add(`\`, "[]", 12, `[1]`)
	f.Fuzz(func(t *testing.T, k1, k2 string, idx int, name string) {
		if idx < 0 {
			idx = -idx
		}
		if idx < 0 {
			idx = 0
		}
		path := []metricStep{{Key: k1}, {Index: idx, IsIndex: true}, {Key: k2}}
		if got, err := parseMetricName(formatMetricName(path)); err != nil || !reflect.DeepEqual(got, path) {
			t.Fatalf("path %+v: name %q parsed as %+v, %v", path, formatMetricName(path), got, err)
		}
		if strings.HasPrefix(formatMetricName(path), "'") {
			t.Fatalf("name %q begins with the formula guard", formatMetricName(path))
		}
		p, err := parseMetricName(name)
		if err != nil {
			return
		}
		if again := formatMetricName(p); again != name {
			t.Fatalf("name %q parsed as %+v formats as %q", name, p, again)
		}
	})
}
