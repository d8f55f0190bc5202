package server

// A real-browser test of the matrix view's check against the serving side
// (issue 19 item 4, docs/jobs.md "Client and server disagreement").

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// answerServedRuns answers n runs of agent a: each reports bytes_read
// read(server) and, as the serving side of its server, bytes_served
// served(server) for a.
func answerServedRuns(t *testing.T, a *bench.SimAgent, n int, read, served func(server string) int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), outcomeTimeout)
	defer cancel()
	for acked := 0; acked < n; {
		m, err := a.Next(ctx)
		if err != nil {
			t.Fatalf("agent %s: %v", a.ID, err)
		}
		switch m := m.(type) {
		case *jobproto.Ack:
			if m.Error != "" {
				t.Fatalf("agent %s: result refused: %s", a.ID, m.Error)
			}
			acked++
		case *jobproto.Run:
			s := m.Params["server"]
			send(t, a, jobproto.Result{Type: jobproto.TypeResult, Job: m.Job, Outcome: jobproto.OutcomeSucceeded,
				StartedAt: time.Now().Add(-time.Second), EndedAt: time.Now(),
				Metrics: json.RawMessage(fmt.Sprintf(`{"bytes_read": %d, "server": %q, "bytes_served": {%q: %d}}`, read(s), s, a.ID, served(s)))})
		}
	}
}

// TestBrowserMatrixDisagree: a matrix job whose runs report bytes_served
// is shown checked against bytes_served by server; exactly the one cell
// that disagrees is highlighted (class, marker with the served figure,
// title with both figures), the count says 1, and the CSV link carries the
// check. Choosing no check removes the highlight.
func TestBrowserMatrixDisagree(t *testing.T) {
	e := startDashboard(t, nil)
	c1, c2 := e.agent("c1", "role=client"), e.agent("c2", "role=client")
	bob := e.userToken("bob", auth.ScopeJobsWrite)
	id := e.createJob(bob, url.Values{"action": {"download"}, "targets": {"role=client"}, "server": {"a", "b"}, "PHASE": {"RUN"}})
	answerServedRuns(t, c1, 2, func(s string) int64 { return map[string]int64{"a": 100, "b": 200}[s] },
		func(s string) int64 { return map[string]int64{"a": 100, "b": 150}[s] })
	same := func(s string) int64 { return map[string]int64{"a": 300, "b": 400}[s] }
	answerServedRuns(t, c2, 2, same, same)
	wait.For(t, "job "+id+" completed", func() bool { return e.matrixJob(bob, id).Phase == "COMPLETED" })

	tb := newTab(t, e.browser, "operator")
	e.loginTo(tb, alice(), "/ui/jobs/"+id, "jobs")
	tb.waitJS(stepTimeout, "the checked matrix", `document.querySelector('`+tid("matrix-disagreements")+`').dataset.count === '1'`)
	if got := eval[[]string](tb, "the check", `[document.querySelector('#matrix-against').value, document.querySelector('#matrix-by').value]`); !slices.Equal(got, []string{"bytes_served", "server"}) {
		t.Errorf("check chosen %q, want bytes_served by server", got)
	}
	marked := eval[[][]string](tb, "the highlighted cells", `[...document.querySelectorAll('`+tid("matrix-table")+` td.disagree')].map((td) => [td.closest('tr').dataset.agent, td.dataset.column, td.textContent, td.title])`)
	want := [][]string{{"c1", "b", "200 ≠ 150", "c1 reported bytes_read 200; the serving side (bytes_served by server) 150"}}
	if !slices.EqualFunc(marked, want, slices.Equal) {
		t.Errorf("highlighted cells %q, want %q", marked, want)
	}
	if got := tb.text(tid("matrix-disagreements")); got != "1 cell disagrees with bytes_served by server" {
		t.Errorf("count %q", got)
	}
	csvText := eval[string](tb, "the CSV link's file", `(async () => { const a = document.querySelector('`+tid("matrix-csv")+`'); return (await fetch(a.href)).text(); })()`)
	if !strings.HasPrefix(csvText, "agent,a,b,total,disagree\nc1,100,200,300,b\nc1 (bytes_served by server),100,150,,\n") {
		t.Errorf("CSV download: %q", csvText)
	}

	choose(tb, "#matrix-against", "")
	tb.waitJS(stepTimeout, "the matrix without the check", `document.querySelector('`+tid("matrix-disagreements")+`').hidden && document.querySelectorAll('`+tid("matrix-table")+` td.disagree').length === 0`)
	matrix := eval[[][]string](tb, "the matrix", tableJS(`[data-testid="matrix-table"] tr`))
	wantMatrix := [][]string{{"Agent", "a", "b", "Total"}, {"c1", "100", "200", "300"}, {"c2", "300", "400", "700"}, {"Total", "400", "600", "1000"}}
	if !slices.EqualFunc(matrix, wantMatrix, slices.Equal) {
		t.Errorf("matrix %q, want %q", matrix, wantMatrix)
	}
}
