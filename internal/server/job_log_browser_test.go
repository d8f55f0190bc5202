package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// logLinesJS is a JS expression: the texts of the job page's log lines.
const logLinesJS = `[...document.querySelectorAll('#log-lines li:not(.empty)')].map((li) => li.textContent)`

// A late viewer of a job's page sees the lines its runs printed before the
// page opened (the run's log so far), then the new ones live, each once;
// after the job, the stored log and the output tails.
func TestBrowserJobLateViewerSeesEarlierLines(t *testing.T) {
	e := startDashboard(t, nil)
	a1 := e.agent("a1", "role=client")
	user := e.userToken("bob", auth.ScopeJobsWrite)
	id := e.createJob(user, url.Values{"action": {"download"}, "targets": {"a1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, a1)
	send(t, a1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	send(t, a1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"early 1", "early 2"}})
	send(t, a1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStderr, Lines: []string{"early warning"}})
	wait.For(t, "the early lines kept", func() bool {
		status, _, body := e.uwsGet("/api/v1/jobs/"+id+"/runs/a1/log", "Bearer "+user, "")
		return status == http.StatusOK && strings.Count(string(body), "\n") == 3
	})

	// The page opens after the first lines were printed.
	tb := newTab(t, e.browser, "late viewer")
	e.loginTo(tb, alice(), "/ui/jobs/"+id, "jobs") // the job page is in the Jobs section
	tb.waitLive()
	early := []string{"[a1 stdout] early 1", "[a1 stdout] early 2", "[a1 stderr] early warning"}
	earlyJSON, _ := json.Marshal(early)
	tb.waitJS(stepTimeout, "the earlier lines", `JSON.stringify(`+logLinesJS+`) === `+"`"+string(earlyJSON)+"`")
	send(t, a1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"live 3"}})
	all := append(slices.Clone(early), "[a1 stdout] live 3")
	allJSON, _ := json.Marshal(all)
	tb.waitJS(stepTimeout, "the live line after them, each line once", `JSON.stringify(`+logLinesJS+`) === `+"`"+string(allJSON)+"`")

	finish(t, a1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Stdout: "early 1\nearly 2\nlive 3\n", Stderr: "early warning\n"})
	tb.waitJS(stepTimeout, "COMPLETED", `document.querySelector('[data-testid="job-phase"]').textContent === 'COMPLETED'`)
	tb.waitJS(stepTimeout, "the stored log among the results", `document.querySelector('[data-testid="result-row"][data-result="logs/a1.txt"]') !== null`)
	tail := eval[string](tb, "the stderr tail", `(document.querySelector('[data-testid="run-stderr-tail"] pre') || {}).textContent || ''`)
	if tail != "early warning\n" {
		t.Errorf("stderr tail on the page: %q", tail)
	}

	// A viewer after the job reads the stored log.
	tb.run("reload", chromedp.Reload())
	tb.waitJS(stepTimeout, "the stored log", `JSON.stringify(`+logLinesJS+`) === `+"`"+string(allJSON)+"`")
	tb.checkConsole()
}
