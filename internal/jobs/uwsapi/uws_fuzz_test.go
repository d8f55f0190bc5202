package uwsapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// FuzzParseAfter: parseAfter never panics; what it accepts is a UTC
// instant in years 1-9999 that survives a round trip through its RFC 3339
// form, and DESTRUCTION accepts the same strings.
func FuzzParseAfter(f *testing.F) {
	for _, tc := range instantTests {
		f.Add(tc.in)
	}
	for _, s := range badInstants {
		f.Add(s)
	}
	f.Add("9999-12-31T23:59:59.999999999-23:59")
	f.Add("0001-01-01T00:00:00+23:59")
	f.Add("2026-11-23T10:00:00,5Z")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAfter(s)
		if err != nil {
			var pe *paramError
			if !errors.As(err, &pe) || pe.Param != "AFTER" {
				t.Fatalf("error %v (%T)", err, err)
			}
			if _, derr := parseDestruction(s, time.Time{}); derr == nil {
				t.Fatalf("DESTRUCTION accepts %q, AFTER does not", s)
			}
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("%q: location %v", s, got.Location())
		}
		if y := got.Year(); y < 1 || y > 9999 {
			t.Fatalf("%q: year %d", s, y)
		}
		again, err := parseAfter(got.Format(time.RFC3339Nano))
		if err != nil || !again.Equal(got) {
			t.Fatalf("%q → %v → %v, %v", s, got, again, err)
		}
		if formatted := formatTime(got); len(formatted) != len("2026-11-23T10:00:00.123Z") {
			t.Fatalf("%q formats as %q", s, formatted)
		}
		d, err := parseDestruction(s, got)
		if err != nil || !d.Equal(got) {
			t.Fatalf("parseDestruction(%q, itself) = %v, %v", s, d, err)
		}
	})
}

// FuzzSummaryCSV: any metrics bytes (and agent ids, states) give a summary
// that encoding/csv reads back with five fields per record, one or more
// rows for the run, the agent and state intact (a leading ' where they
// begin like a formula); no text cell that begins like a formula; and the
// JSON document of the run still encodes.
func FuzzSummaryCSV(f *testing.F) {
	f.Add("c1", "succeeded", 0, []byte(`{"bytes_read":{"server-a":5},"a":[1,2.50,null,"x,y"]}`))
	f.Add("c2", "failed", 3, []byte(`{"big":12345678901234567890,"s":"\"quoted\", with comma\nand newline"}`))
	f.Add("c,3", "running", -1, []byte(nil))
	f.Add("c\"4", "timed_out", 137, []byte(`{}`))
	f.Add("c5", "lost", -1, []byte(`{"a":`))
	f.Add("c6", "succeeded", 0, []byte(`[[[[[[[[[[1]]]]]]]]]]`))
	f.Add("c7\r\n", "succeeded", 0, []byte(`{"\u0000":"\ud800","k\r":"v\r\n"}`))
	f.Add("", "", 0, []byte("\xff\xfe{"))
	f.Add("-c8", "=state", 0, []byte(`{"=HYPERLINK(\"http://x\")":"@SUM(A1)","n":-5,"t":"\tx","p":"+1"}`))
	f.Fuzz(func(t *testing.T, agent, state string, exit int, metrics []byte) {
		run := store.Run{AgentID: agent, State: store.RunState(state), ExitCode: exit, Metrics: metrics}
		var b bytes.Buffer
		if err := writeSummaryCSV(&b, []store.Run{run}); err != nil {
			t.Fatal(err)
		}
		recs := checkCSV(t, b.Bytes())
		rows := recs[1:]
		want := len(flattenMetrics(metrics))
		if want == 0 {
			want = 1
		}
		if len(rows) != want {
			t.Fatalf("%d rows, want %d:\n%s", len(rows), want, b.Bytes())
		}
		// encoding/csv reads \r\n inside a quoted field as \n.
		norm := func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
		wantExit := ""
		if run.State.Final() && exit >= 0 {
			wantExit = strconv.Itoa(exit)
		}
		flat := flattenMetrics(metrics)
		for i, r := range rows {
			if r[0] != norm(csvText(agent)) || r[1] != norm(csvText(state)) || r[2] != wantExit {
				t.Fatalf("row %q, want agent %q state %q exit %q", r, agent, state, wantExit)
			}
			cells := []string{r[0], r[1], r[3]}
			if len(flat) > 0 && !flat[i].Number {
				cells = append(cells, r[4])
			}
			for _, c := range cells {
				if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
					t.Fatalf("row %q: text cell %q begins like a formula", r, c)
				}
			}
		}
		if _, err := json.Marshal(runJSON(&run)); err != nil {
			t.Fatalf("run JSON: %v", err)
		}
	})
}
