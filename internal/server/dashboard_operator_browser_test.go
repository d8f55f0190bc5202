package server

// Real-browser tests of the dashboard as an operator's tool (issue 17):
// hidden controls stay hidden, a job page one can diagnose from, stale data
// marked, lists that say how fresh they are, the jobs list and the audit
// log one can search, and screenshots of every page at desktop and phone
// width kept as artefacts.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// shownJS is a JS expression: the element sel finds is rendered (present,
// neither it nor an ancestor display:none, and not in a closed <details>).
func shownJS(sel string) string {
	return `(() => { const el = document.querySelector('` + sel + `'); return el !== null && el.checkVisibility(); })()`
}

// TestBrowserHiddenStaysHidden: a control with the hidden attribute is not
// shown, whatever display its own rule gives it (button, flex box): a
// finished job has no Abort button, and in label mode the New-job form
// shows no agent checkboxes.
func TestBrowserHiddenStaysHidden(t *testing.T) {
	e := startDashboard(t, nil)
	a1 := e.agent("a1", "role=client")
	user := e.userToken("bob", auth.ScopeJobsWrite)
	id := e.createJob(user, url.Values{"action": {"download"}, "targets": {"a1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, a1)
	finish(t, a1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	e.waitPhase(user, id, "COMPLETED")

	tb := newTab(t, e.browser, "operator")
	e.loginTo(tb, alice(), "/ui/jobs/"+id, "jobs")
	tb.waitJS(stepTimeout, "COMPLETED", `document.querySelector('`+tid("job-phase")+`').textContent === 'COMPLETED'`)
	if eval[bool](tb, "the Abort button shown", shownJS(tid("job-abort"))) {
		t.Error("a COMPLETED job shows its Abort button")
	}

	tb.run("open the jobs page", chromedp.Navigate(e.url+"/ui/jobs"))
	chooseAction(tb, "download")
	tb.waitJS(stepTimeout, "a1's checkbox", shownJS(tid("target-a1")))
	tb.run("label mode", chromedp.Click(chromedp.CSS(tid("target-mode-labels"))))
	tb.waitJS(stepTimeout, "the selector shown", shownJS(tid("target-selector")))
	if eval[bool](tb, "agent checkboxes shown", shownJS(tid("target-ids"))) {
		t.Error("in label mode the agent checkboxes are still shown")
	}
}

// chooseAction picks an action in the New-job form as a user does (the
// change event fills the form).
func chooseAction(tb *tab, name string) {
	tb.t.Helper()
	tb.waitJS(stepTimeout, "the action "+name, `[...document.querySelector('[data-testid="job-action"]').options].some((o) => o.text === '`+name+`')`)
	eval[bool](tb, "choose "+name, `(() => {
		const sel = document.querySelector('[data-testid="job-action"]');
		sel.value = [...sel.options].find((o) => o.text === '`+name+`').value;
		sel.dispatchEvent(new Event('change', { bubbles: true }));
		return true;
	})()`)
}

// TestBrowserJobPageDiagnoses: the job page of a failed job says why
// without a terminal — each run's outcome, exit code and duration, the
// failed run's error and last stderr lines — and shows the metrics as a
// table (named as the summary CSV names them); a PENDING job has a Run
// button that starts it; the log follows new lines by default, and a log
// message carrying several lines shows each.
func TestBrowserJobPageDiagnoses(t *testing.T) {
	e := startDashboard(t, nil)
	a1, a2 := e.agent("a1", "role=client"), e.agent("a2", "role=client")
	user := e.userToken("bob", auth.ScopeJobsWrite)

	// A PENDING job: Run starts it.
	id := e.createJob(user, url.Values{"action": {"download"}, "targets": {"a1,a2"}, "server": {"a"}})
	tb := newTab(t, e.browser, "operator")
	e.loginTo(tb, alice(), "/ui/jobs/"+id, "jobs")
	tb.waitJS(stepTimeout, "PENDING with a Run button", `document.querySelector('`+tid("job-phase")+`').textContent === 'PENDING' && `+shownJS(tid("job-run")))
	tb.run("run", chromedp.Click(chromedp.CSS(tid("job-run"))))
	nextRun(t, a1)
	nextRun(t, a2)
	tb.waitJS(stepTimeout, "EXECUTING, no Run button", `document.querySelector('`+tid("job-phase")+`').textContent === 'EXECUTING' && !`+shownJS(tid("job-run")))
	tb.waitLive()
	send(t, a1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	send(t, a2, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})

	// The log follows: many lines, the newest in view; a message of
	// several lines shows each of them.
	for i := range 10 {
		lines := make([]string, 20)
		for j := range lines {
			lines[j] = fmt.Sprintf("line %d", i*20+j+1)
		}
		send(t, a1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: lines})
	}
	tb.t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log: %s", eval[string](tb, "log state", `(() => { const box = document.querySelector('`+tid("job-log")+`'); const items = [...document.querySelectorAll('#log-lines li')]; return JSON.stringify([items.length, items.slice(-3).map((li) => li.textContent), box.scrollTop, box.clientHeight, box.scrollHeight]); })()`))
		}
	})
	tb.waitJS(stepTimeout, "200 lines, scrolled to the last", `(() => {
		const box = document.querySelector('`+tid("job-log")+`');
		const items = [...document.querySelectorAll('#log-lines li:not(.empty)')];
		return items.length === 200 && items[199].textContent === '[a1 stdout] line 200' &&
			box.scrollHeight > box.clientHeight && box.scrollTop + box.clientHeight >= box.scrollHeight - 2;
	})()`)

	start := time.Now().Add(-90 * time.Second)
	finish(t, a1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, StartedAt: start, EndedAt: start.Add(75 * time.Second),
		Metrics: json.RawMessage(`{"bytes_read":{"127.0.0.1:8080":5242880},"files":3}`)})
	finish(t, a2, jobproto.Result{Job: id, Outcome: jobproto.OutcomeFailed, ExitCode: 2, Error: "exit status 2",
		StartedAt: start, EndedAt: start.Add(3 * time.Second), Stderr: "connecting to a\ncurl: (7) Failed to connect to a port 80: Connection refused\n"})
	tb.waitJS(stepTimeout, "the job ended", `['COMPLETED', 'ERROR'].includes(document.querySelector('`+tid("job-phase")+`').textContent)`)
	tb.waitJS(stepTimeout, "both runs ended", `document.querySelectorAll('`+tid("run-row")+`[data-state="succeeded"], `+tid("run-row")+`[data-state="failed"]').length === 2`)

	rowText := func(agent, col string) string {
		return eval[string](tb, agent+" "+col, `document.querySelector('`+tid("run-row")+`[data-agent="`+agent+`"] `+tid(col)+`').textContent`)
	}
	if got := rowText("a2", "run-exit-code"); got != "2" {
		t.Errorf("a2's exit code on the page: %q", got)
	}
	if got := rowText("a1", "run-duration"); got != "1 min 15 s" {
		t.Errorf("a1's duration on the page: %q", got)
	}
	if got := rowText("a2", "run-duration"); got != "3.0 s" {
		t.Errorf("a2's duration on the page: %q", got)
	}
	if got := tb.text(tid("job-outcome")); got != "1 succeeded, 1 failed (of 2 runs)" {
		t.Errorf("outcome: %q", got)
	}
	why := tb.text(tid("job-diagnosis") + ` [data-agent="a2"]`)
	for _, want := range []string{"failed", "exit code 2", "exit status 2", "Connection refused"} {
		if !strings.Contains(why, want) {
			t.Errorf("why a2 failed, on the page: %q lacks %q", why, want)
		}
	}
	if eval[bool](tb, "a1 in the diagnosis", `document.querySelector('`+tid("job-diagnosis")+` [data-agent="a1"]') !== null`) {
		t.Error("the succeeded run a1 is listed among the reasons")
	}
	metrics := eval[[][]string](tb, "the metrics table", `[...document.querySelectorAll('`+tid("metric-row")+`')].map((tr) => [...tr.cells].map((td) => td.textContent))`)
	wantMetrics := [][]string{{"a1", `bytes_read.127\.0\.0\.1:8080`, "5242880"}, {"a1", "files", "3"}}
	if !slices.EqualFunc(metrics, wantMetrics, slices.Equal) {
		t.Errorf("metrics table %q, want %q", metrics, wantMetrics)
	}
	if eval[bool](tb, "the Abort or Run button shown", shownJS(tid("job-abort"))+` || `+shownJS(tid("job-run"))) {
		t.Error("a finished job shows Abort or Run")
	}
}

// TestBrowserStaleDataMarked: when the live feed is down (the server
// stopped), the Overview's figures are greyed with "as of HH:MM:SS" within
// 5 s, and the status line says so.
func TestBrowserStaleDataMarked(t *testing.T) {
	e := startDashboard(t, nil)
	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/", "overview")
	tb.waitLive()
	if eval[bool](tb, "stale marks while live", `document.body.hasAttribute('data-stale') || document.querySelector('`+tid("stale-note")+`') !== null`) {
		t.Fatal("the live Overview is marked stale")
	}
	// The page keeps trying to reconnect to the stopped server: the
	// browser logs those refused requests.
	tb.expectNetworkError(`^(http|ws)://127\.0\.0\.1:`)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("page: %s", eval[string](tb, "state", `JSON.stringify([document.body.dataset.stale, document.querySelector('#live-status').dataset.state, document.querySelector('#live-status').textContent, String(document.querySelector('`+tid("overview-connections")+`').dataset.stale)])`))
		}
	})
	stopped := make(chan error, 1)
	go func() { stopped <- e.Shutdown(context.Background()) }()
	tb.waitJS(5*time.Second, "the figures greyed with their time", `(() => {
		const card = document.querySelector('`+tid("overview-connections")+`');
		const note = card.querySelector('`+tid("stale-note")+`');
		const figure = document.querySelector('`+tid("ov-connections")+`').closest('.live-data > *');
		return card.dataset.stale === 'true' && note !== null && /^Not live: as of \d\d:\d\d:\d\d$/.test(note.textContent) &&
			Number(getComputedStyle(figure).opacity) < 1;
	})()`)
	if s := tb.text(tid("live-status")); !regexp.MustCompile(`figures as of \d\d:\d\d:\d\d`).MatchString(s) {
		t.Errorf("status line %q does not give the figures' time", s)
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestBrowserListsSayHowFresh: the agents list shows offline agents by
// default, with their last-seen time; the lists no topic updates (jobs,
// revocations, audit) say they are a snapshot, with its time, and Refresh
// reads them again.
func TestBrowserListsSayHowFresh(t *testing.T) {
	e := startDashboard(t, nil)
	reader := e.userToken("reader", auth.ScopeJobsRead)
	e.offlineAgent(reader, "c9")
	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/agents", "agents")
	tb.waitJS(stepTimeout, "the offline agent with its last-seen time", `(() => {
		const tr = document.querySelector('tr[data-agent-id="c9"]');
		return tr !== null && tr.getClientRects().length > 0 && tr.querySelector('time') !== null;
	})()`)

	user := e.userToken("bob", auth.ScopeJobsWrite)
	snapshotRefreshes := func(page, name, sel string, change func()) {
		t.Helper()
		tb.run("open "+page, chromedp.Navigate(e.url+page))
		tb.waitJS(stepTimeout, name+" snapshot time", `/^Snapshot as of \d\d:\d\d:\d\d/.test((document.querySelector('`+tid(name+"-as-of")+`') || {}).textContent || '')`)
		before := eval[int](tb, "rows", `document.querySelectorAll('`+sel+`').length`)
		change()
		tb.run("refresh "+page, chromedp.Click(chromedp.CSS(tid(name+"-refresh"))))
		tb.waitJS(stepTimeout, "one more row after Refresh", fmt.Sprintf(`document.querySelectorAll('%s').length === %d`, sel, before+1))
	}
	snapshotRefreshes("/ui/jobs", "jobs", tid("job-row"), func() {
		e.createJob(user, url.Values{"action": {"download"}, "targets": {"c9"}, "server": {"a"}})
	})
	snapshotRefreshes("/ui/revocations", "rev", tid("rev-row"), func() {
		if status, b := e.api("POST", "/api/v1/revocations", e.adminToken(), `{"kind":"booking","value":"b-17","ttl":"1h"}`); status != 201 && status != 200 {
			t.Fatalf("revoke: %d %s", status, b)
		}
	})
	snapshotRefreshes("/ui/audit", "audit", tid("audit-row"), func() {
		if status, b := e.api("POST", "/api/v1/revocations", e.adminToken(), `{"kind":"booking","value":"b-18","ttl":"1h"}`); status != 201 && status != 200 {
			t.Fatalf("revoke: %d %s", status, b)
		}
	})
}

// TestBrowserJobsListFilters: the jobs list shows each job's action,
// targets, owner, duration and outcome; owner, action and run id filter it
// (on the server) and stay in the URL; the New-job form is in view without
// scrolling past a long list, at desktop and phone width.
func TestBrowserJobsListFilters(t *testing.T) {
	e := startDashboard(t, nil)
	a1 := e.agent("a1", "role=client")
	bob, carol := e.userToken("bob", auth.ScopeJobsWrite), e.userToken("carol", auth.ScopeJobsWrite)
	done := e.createJob(bob, url.Values{"action": {"download"}, "targets": {"a1"}, "server": {"a"}, "RUNID": {"w49"}, "PHASE": {"RUN"}})
	nextRun(t, a1)
	start := time.Now().Add(-time.Minute)
	finish(t, a1, jobproto.Result{Job: done, Outcome: jobproto.OutcomeFailed, ExitCode: 1, StartedAt: start, EndedAt: start.Add(42 * time.Second)})
	e.waitPhase(bob, done, "ERROR")
	for i := range 30 {
		e.createJob(carol, url.Values{"action": {"download"}, "targets": {"role=client"}, "server": {"a"}, "RUNID": {fmt.Sprintf("c-%d", i)}})
	}

	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/jobs", "jobs")
	tb.waitJS(stepTimeout, "31 rows", `document.querySelectorAll('`+tid("job-row")+`').length === 31`)
	formInView := `(() => { const r = document.querySelector('` + tid("new-job") + `').getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; })()`
	if !eval[bool](tb, "the form in view", formInView) {
		t.Error("at 1280 px the New-job form is not in view without scrolling")
	}
	cell := func(id, col string) string {
		return eval[string](tb, col, `document.querySelector('`+tid("job-row")+`[data-job-id="`+id+`"] `+tid(col)+`').textContent`)
	}
	for col, want := range map[string]string{"job-row-action": "download", "job-row-targets": "a1", "job-row-owner": "bob"} {
		if got := cell(done, col); got != want {
			t.Errorf("%s of the finished job: %q, want %q", col, got, want)
		}
	}
	if got := cell(done, "job-row-duration"); !regexp.MustCompile(`^\d+(\.\d)? (ms|s)$`).MatchString(got) {
		t.Errorf("duration of the finished job: %q", got)
	}
	if got := cell(done, "job-row-outcome"); !strings.HasPrefix(got, "ERROR") {
		t.Errorf("outcome of the failed job: %q", got)
	}

	// Filters: typed in, submitted, kept in the URL, done by the server.
	tb.run("filter by owner and action",
		chromedp.SendKeys(chromedp.CSS(tid("jobs-owner")), "bob"),
		chromedp.SendKeys(chromedp.CSS(tid("jobs-action")), "download"))
	tb.clickAndLoad("apply", tid("jobs-apply"))
	if q := tb.location().Query(); q.Get("owner") != "bob" || q.Get("action") != "download" {
		t.Errorf("filters not in the URL: %s", tb.location())
	}
	tb.waitJS(stepTimeout, "bob's job only", `(() => { const rows = [...document.querySelectorAll('`+tid("job-row")+`')]; return rows.length === 1 && rows[0].dataset.jobId === '`+done+`'; })()`)
	if st := e.reqs.find("GET", "/ui/api/api/v1/jobs"); len(st) == 0 {
		t.Error("no list request logged")
	}
	tb.run("open a run id filter", chromedp.Navigate(e.url+"/ui/jobs?runid=c-7"))
	tb.waitJS(stepTimeout, "the c-7 job only", `document.querySelectorAll('`+tid("job-row")+`').length === 1 && document.querySelector('`+tid("jobs-runid")+`').value === 'c-7'`)
	tb.run("open an action of no job", chromedp.Navigate(e.url+"/ui/jobs?action=upload"))
	tb.waitJS(stepTimeout, "no job", `document.querySelectorAll('`+tid("job-row")+`').length === 0 && /^0 jobs/.test(document.querySelector('`+tid("jobs-count")+`').textContent)`)

	// Only jobs:admin lists another owner's jobs.
	if status, b := e.api("GET", "/api/v1/jobs?OWNER=bob", carol, ""); status != 403 {
		t.Errorf("carol lists bob's jobs: %d %s", status, b)
	}

	tp := newTab(t, e.browser, "phone")
	tp.run("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulatePortrait))
	e.loginTo(tp, alice(), "/ui/jobs", "jobs")
	tp.waitJS(stepTimeout, "31 rows", `document.querySelectorAll('`+tid("job-row")+`').length === 31`)
	if !eval[bool](tp, "the form above the list", `document.querySelector('`+tid("new-job")+`').getBoundingClientRect().top < document.querySelector('`+tid("jobs-table")+`').getBoundingClientRect().top`) {
		t.Error("at 390 px the New-job form is below the list")
	}
}

// TestBrowserAuditNewestFirst: the audit log reads newest first, pages
// both ways (Older, then Newer back), filters by actor, action and time,
// with the filters in the URL; creating, running and aborting a job are in
// it under the user who did them.
func TestBrowserAuditNewestFirst(t *testing.T) {
	e := startDashboard(t, nil)
	a1 := e.agent("a1", "role=client")
	bob := e.userToken("bob", auth.ScopeJobsWrite)
	id := e.createJob(bob, url.Values{"action": {"download"}, "targets": {"a1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, a1)
	if status, _, _ := e.form("POST", "/api/v1/jobs/"+id+"/phase", bob, url.Values{"PHASE": {"ABORT"}}); status != 303 {
		t.Fatalf("abort: %d", status)
	}
	admin := e.adminToken()
	for i := range 120 {
		if status, b := e.api("POST", "/api/v1/revocations", admin, fmt.Sprintf(`{"kind":"booking","value":"b-%d","ttl":"1h"}`, i)); status != 201 && status != 200 {
			t.Fatalf("revoke: %d %s", status, b)
		}
	}

	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/audit", "audit")
	rowIDs := `[...document.querySelectorAll('` + tid("audit-row") + `')].map((tr) => Number(tr.dataset.id))`
	tb.waitJS(stepTimeout, "a full page", rowIDs+`.length === 100`)
	first := eval[[]int64](tb, "the first page", rowIDs)
	if !slices.IsSortedFunc(first, func(a, b int64) int { return int(b - a) }) {
		t.Errorf("the first page is not newest first: %v", first[:5])
	}
	if eval[bool](tb, "Newer shown", shownJS(tid("audit-newer"))) {
		t.Error("the newest page offers newer events")
	}
	tb.clickAndLoad("older", tid("audit-older"))
	if q := tb.location().Query(); q.Get("before") != strconv.FormatInt(first[99], 10) {
		t.Errorf("Older led to %s, want before=%d", tb.location(), first[99])
	}
	tb.waitJS(stepTimeout, "the older page", rowIDs+`.length > 0 && `+rowIDs+`[0] < `+strconv.FormatInt(first[99], 10))
	tb.clickAndLoad("newer", tid("audit-newer"))
	tb.waitJS(stepTimeout, "back to the newest page", `JSON.stringify(`+rowIDs+`) === '`+mustJSON(t, first)+`'`)

	actions := `[...document.querySelectorAll('` + tid("audit-row") + `')].map((tr) => tr.cells[3].textContent + ' ' + tr.cells[4].textContent)`
	tb.run("filter by actor", chromedp.SendKeys(chromedp.CSS(tid("audit-actor")), "bob"))
	tb.clickAndLoad("apply", tid("audit-apply"))
	if q := tb.location().Query(); q.Get("actor") != "bob" {
		t.Errorf("the actor filter is not in the URL: %s", tb.location())
	}
	want := mustJSON(t, []string{"job.abort job:" + id, "job.run job:" + id, "job.create job:" + id})
	tb.waitJS(stepTimeout, "bob's job events, newest first", `JSON.stringify(`+actions+`) === '`+want+`'`)
	tb.run("action filter", chromedp.Navigate(e.url+"/ui/audit?actor=bob&action=job.abort"))
	tb.waitJS(stepTimeout, "the abort only", `JSON.stringify(`+actions+`) === '`+mustJSON(t, []string{"job.abort job:" + id})+`'`)
	tb.run("time filter: from 2099", chromedp.Navigate(e.url+"/ui/audit?actor=bob&since=2099-01-01T00:00"))
	tb.waitJS(stepTimeout, "no event", `document.querySelector('`+tid("audit-count")+`').textContent === 'No event matches.' && document.querySelector('`+tid("audit-since")+`').value.startsWith('2099-01-01T00:00')`)
	tb.run("time filter: until 2099", chromedp.Navigate(e.url+"/ui/audit?actor=bob&until=2099-01-01T00:00"))
	tb.waitJS(stepTimeout, "bob's three events", actions+`.length === 3`)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// screenshot saves a full-page screenshot of the tab as name.png in the
// test's artefact directory (go test -artifacts, or
// $SWITCHBOARD_TEST_ARTIFACTS/<test>; else a directory removed when the
// test ends), whether or not the test fails.
func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	dir, _, err := artifactDir(tb.t)
	if err != nil {
		tb.t.Fatalf("artefact directory: %v", err)
	}
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		tb.t.Fatalf("tab %s: screenshot %s: %v", tb.name, name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

// TestBrowserScreenshots keeps a screenshot of every page of the dashboard
// at desktop (1440 px) and phone (390 px) width as test artefacts, with
// data on each (agents online and offline, a failed job with metrics, a
// connection, a revocation), and checks no page overflows the phone's
// width. Run with -artifacts (or SWITCHBOARD_TEST_ARTIFACTS) to keep them.
func TestBrowserScreenshots(t *testing.T) {
	e := startDashboard(t, nil)
	a1 := e.agent("a1", "role=client", "site=UNL")
	reader := e.userToken("reader", auth.ScopeJobsRead)
	e.offlineAgent(reader, "c9", "role=client")
	bob := e.userToken("bob", auth.ScopeJobsWrite)
	id := e.createJob(bob, url.Values{"action": {"download"}, "targets": {"a1"}, "server": {"data.lab.example"}, "RUNID": {"w49"}, "PHASE": {"RUN"}})
	nextRun(t, a1)
	send(t, a1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	send(t, a1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStdout, Lines: []string{"connecting to data.lab.example", "read 5 MiB"}})
	finish(t, a1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeFailed, ExitCode: 7, Error: "exit status 7",
		Stderr: "curl: (7) Failed to connect\n", Metrics: json.RawMessage(`{"bytes_read":{"127.0.0.1:8080":5242880},"files":3}`)})
	e.createJob(bob, url.Values{"action": {"download"}, "targets": {"role=client"}, "server": {"a"}})
	const topic = "lab/a-rather-long-topic-name/for-a-narrow-screen/camera-0"
	e.dial(topic, e.bookingToken(topic, "bk-shot", "read", "write"))
	if status, b := e.api("POST", "/api/v1/revocations", e.adminToken(), `{"kind":"booking","value":"bk-old","ttl":"1h","reason":"booking cancelled"}`); status != 201 && status != 200 {
		t.Fatalf("revoke: %d %s", status, b)
	}

	pages := []struct{ path, name, ready string }{
		{"/ui/", "overview", tid("ov-connections")},
		{"/ui/connections", "connections", tid("conn-row")},
		{"/ui/agents", "agents", tid("agent-row")},
		{"/ui/jobs", "jobs", tid("job-row")},
		{"/ui/jobs/" + id, "job", tid("metric-row")},
		{"/ui/revocations", "revocations", tid("rev-row")},
		{"/ui/tokens", "tokens", tid("token-form")},
		{"/ui/audit", "audit", tid("audit-row")},
	}
	for _, size := range []struct {
		name          string
		width, height int64
		mobile        bool
	}{{"1440", 1440, 900, false}, {"390", 390, 844, true}} {
		tb := newTab(t, e.browser, "w"+size.name)
		if size.mobile {
			tb.run("phone viewport", chromedp.EmulateViewport(size.width, size.height, chromedp.EmulateMobile, chromedp.EmulatePortrait))
		} else {
			tb.run("desktop viewport", chromedp.EmulateViewport(size.width, size.height))
		}
		e.idp.m.QueueUser(alice())
		tb.run("open the login page", chromedp.Navigate(e.url+"/login?next=/ui/"), chromedp.WaitVisible(chromedp.CSS("#login-oidc")))
		tb.screenshot("login-" + size.name)
		tb.clickAndLoad("sign in", "#login-oidc")
		for _, p := range pages {
			tb.run("open "+p.path, chromedp.Navigate(e.url+p.path))
			tb.waitJS(stepTimeout, p.name+" with its data", `document.querySelector('`+p.ready+`') !== null`)
			tb.screenshot(p.name + "-" + size.name)
			if w := eval[float64](tb, "page width", `document.documentElement.scrollWidth`); w > float64(size.width) {
				t.Errorf("%s at %d px: the page is %v px wide", p.name, size.width, w)
			}
		}
	}
}

// TestBrowserConnectionsForOperators: each connection's rates and last
// activity; the page's own connection marked and not revocable; Deny and
// Revoke behind a row menu; rows held still while the pointer is on the
// table; topics that wrap at "/"; filter, sort and page in the URL.
func TestBrowserConnectionsForOperators(t *testing.T) {
	e := startDashboard(t, func(c *Config) { c.StatsEvery = 500 * time.Millisecond })
	const topic = "lab/rig-7/camera/front"
	writer := e.dial(topic, e.bookingToken(topic, "bk-7", "read", "write"))
	e.dial(topic, e.bookingToken(topic, "bk-8", "read"))

	tb := newTab(t, e.browser, "operator")
	e.loginTo(tb, alice(), "/ui/connections", "connections")
	tb.waitLive()
	row := func(booking string) string { return tid("conn-row") + `:has(` + denyButton(booking) + `)` }
	tb.waitJS(stepTimeout, "bk-7's row", `document.querySelector('`+row("bk-7")+`') !== null`)

	// Traffic: the writer's rate and last activity show.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		payload := strings.Repeat("x", 1000)
		for ctx.Err() == nil {
			if err := writer.Write(ctx, client.Text, []byte(payload)); err != nil {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	tb.waitJS(15*time.Second, "bk-7's rate in", `(() => {
		const cells = document.querySelector('`+row("bk-7")+`').cells;
		return /^[1-9][0-9.]*k? · /.test(cells[12].textContent) && /^\d\d:\d\d:\d\d$/.test(cells[13].textContent);
	})()`)
	cancel()

	// The page's own connection: marked, no actions.
	ownRow := eval[string](tb, "the page's own row", `(() => {
		const tr = document.querySelector('`+tid("conn-row")+`[data-own="page"]');
		return tr ? tr.cells[0].textContent + '|' + tr.cells[3].textContent + '|' + tr.querySelectorAll('button').length : '';
	})()`)
	if ownRow != control.ChangesTopic+"|oidc:alice (this page)|0" {
		t.Errorf("the page's own row: %q, want %s, marked, without buttons", ownRow, control.ChangesTopic)
	}

	// Deny and Revoke are in the row's menu, out of sight until it opens.
	if eval[bool](tb, "deny shown", shownJS(denyButton("bk-7"))) {
		t.Error("Deny booking shows on the row before its menu is opened")
	}
	tb.run("open the menu", chromedp.Click(chromedp.CSS(row("bk-7")+` `+tid("conn-menu")+` > summary`)))
	tb.waitJS(stepTimeout, "deny in the open menu", shownJS(denyButton("bk-7")))

	// The topic wraps at its slashes.
	if n := eval[int](tb, "line breaks in the topic", `document.querySelector('`+row("bk-7")+`').cells[0].querySelectorAll('wbr').length`); n != 3 {
		t.Errorf("topic %s has %d break opportunities, want 3", topic, n)
	}

	// The pointer on the table holds the rows still.
	eval[bool](tb, "pointer on the table", `document.querySelector('#conn-rows').dispatchEvent(new PointerEvent('pointerenter'))`)
	e.dial(topic, e.bookingToken(topic, "bk-9", "read"))
	tb.waitJS(stepTimeout, "the paused note", shownJS(tid("conn-paused")))
	if eval[bool](tb, "bk-9's row", `document.querySelector('`+row("bk-9")+`') !== null`) {
		t.Error("a new row appeared under the pointer")
	}
	eval[bool](tb, "pointer off the table", `document.querySelector('#conn-rows').dispatchEvent(new PointerEvent('pointerleave'))`)
	tb.waitJS(stepTimeout, "bk-9's row after the pointer left", `document.querySelector('`+row("bk-9")+`') !== null && !`+shownJS(tid("conn-paused")))

	// Filter and sort go into the URL, and come back from it.
	tb.run("filter", chromedp.SendKeys(chromedp.CSS(tid("conn-filter")), "bk-"))
	tb.run("sort by topic, descending", chromedp.Click(chromedp.CSS(tid("sort-topic"))), chromedp.Click(chromedp.CSS(tid("sort-topic"))))
	tb.waitJS(stepTimeout, "the view in the URL", `(() => { const q = new URLSearchParams(location.search); return q.get('q') === 'bk-' && q.get('sort') === 'topic' && q.get('dir') === 'desc'; })()`)
	tb.run("reload", chromedp.Reload())
	tb.waitJS(stepTimeout, "the view restored", `document.querySelector('`+tid("conn-filter")+`').value === 'bk-' &&
		document.querySelector('`+tid("sort-topic")+`').closest('th').getAttribute('aria-sort') === 'descending' &&
		document.querySelector('`+tid("conn-count")+`').dataset.shown === '3'`)
}

// idleConn is a relay connection that sends nothing and drops what it is
// sent: a cheap way to hold thousands of connections open in a test.
type idleConn struct {
	closed chan struct{}
	once   sync.Once
}

func newIdleConn() *idleConn { return &idleConn{closed: make(chan struct{})} }

func (c *idleConn) ReadMessage() (relay.MessageType, []byte, error) {
	<-c.closed
	return 0, nil, io.EOF
}
func (c *idleConn) WriteMessages([]relay.Message, time.Time) error { return nil }
func (c *idleConn) Ping(time.Time) error                           { return nil }
func (c *idleConn) Close(relay.CloseCode, string) error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *idleConn) Abort() { c.Close(0, "") }

// openIdle opens n idle connections on the server's relay (topics
// lab/t-0 … lab/t-99, with bookings), closed when the test ends.
func (e *dashEnv) openIdle(t *testing.T, n int) {
	t.Helper()
	var wg sync.WaitGroup
	conns := make([]*idleConn, n)
	before := e.relay.Stats().Connections
	for i := range n {
		conns[i] = newIdleConn()
		info := relay.Info{Topic: fmt.Sprintf("lab/t-%d", i%100), Prefix: "session", CanRead: true, CanWrite: true,
			Identity: relay.Identity{BookingID: fmt.Sprintf("bk-%d", i), Subject: "student"}, RemoteAddr: "192.0.2.1:1234",
			UserAgent: "idle test connection", Scopes: []string{"read", "write"}}
		wg.Go(func() { e.relay.Accept(context.Background(), conns[i], info) })
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close(0, "")
		}
		wg.Wait()
	})
	wait.For(t, fmt.Sprintf("%d idle connections", n), func() bool { return e.relay.Stats().Connections >= before+n })
}

// wsBytesJS, run before a page's scripts, counts the bytes its websockets
// receive in window.__wsBytes.
const wsBytesJS = `window.__wsBytes = 0;
window.WebSocket = class extends WebSocket {
	constructor(...args) {
		super(...args);
		this.addEventListener('message', (ev) => {
			window.__wsBytes += typeof ev.data === 'string' ? new TextEncoder().encode(ev.data).length : ev.data.byteLength;
		});
	}
};`

// TestBrowserOverviewFeedCost: an Overview tab on a node with 2,000
// connections receives under 5 KB/s of live data (the node's aggregates,
// not every connection), reports every second included, and shows the
// dashboard's own traffic apart.
func TestBrowserOverviewFeedCost(t *testing.T) {
	e := startDashboard(t, func(c *Config) { c.StatsEvery = time.Second })
	e.openIdle(t, 2000)
	tb := newTab(t, e.browser, "overview")
	tb.onNewDocument(wsBytesJS)
	e.loginTo(tb, alice(), "/ui/", "overview")
	tb.waitLive()
	tb.waitJS(stepTimeout, "2,000 connections on the page", `Number(document.querySelector('`+tid("ov-connections")+`').textContent.replace(/,/g, '')) >= 2000`)
	const measure = 6 * time.Second
	startBytes := eval[float64](tb, "bytes so far", `window.__wsBytes`)
	start := time.Now()
	tb.waitJS(measure+2*time.Second, "the measuring window to pass", fmt.Sprintf(`(() => { const t0 = window.__t0 || (window.__t0 = performance.now()); return performance.now() - t0 >= %d; })()`, measure.Milliseconds()))
	got := eval[float64](tb, "bytes", `window.__wsBytes`) - startBytes
	rate := got / time.Since(start).Seconds()
	t.Logf("Overview at 2,000 connections: %.0f bytes of live data in %v: %.0f B/s (load %s)", got, time.Since(start).Round(time.Millisecond), rate, loadAvg())
	if rate >= 5000 {
		t.Errorf("the Overview's live feed is %.0f B/s at 2,000 connections, want under 5 KB/s", rate)
	}
	if got == 0 {
		t.Error("no live data in the window: the summaries did not come")
	}
	tb.waitJS(stepTimeout, "the dashboard's traffic apart", `/dashboard's own live views \(\d+ connections/.test(document.querySelector('`+tid("dashboard-traffic")+`').textContent)`)
}

// loadAvg is the machine's load average, for logs of measurements.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// TestBrowserOverviewNeedsAttention: the Overview lists what needs
// attention — an offline agent, a job failed in the last hour — with
// links, and says so when nothing does.
func TestBrowserOverviewNeedsAttention(t *testing.T) {
	e := startDashboard(t, nil)
	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/", "overview")
	tb.waitJS(stepTimeout, "nothing needs attention", shownJS(tid("attention-none")))

	reader := e.userToken("reader", auth.ScopeJobsRead)
	e.offlineAgent(reader, "c9")
	a1 := e.agent("a1")
	bob := e.userToken("bob", auth.ScopeJobsWrite)
	id := e.createJob(bob, url.Values{"action": {"download"}, "targets": {"a1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, a1)
	finish(t, a1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeFailed, ExitCode: 1})
	e.waitPhase(bob, id, "ERROR")

	tb.run("reload", chromedp.Reload())
	item := func(kind string) string { return tid("attention-item") + `[data-kind="` + kind + `"]` }
	tb.waitJS(stepTimeout, "the offline agent and the failed job", shownJS(item("agents-offline"))+` && `+shownJS(item("jobs-failed")))
	if got := tb.text(item("agents-offline")); got != "1 agent offline: c9" {
		t.Errorf("offline agents: %q", got)
	}
	if got := tb.text(item("jobs-failed")); got != "1 job failed in the last hour: "+id {
		t.Errorf("failed jobs: %q", got)
	}
	if href := eval[string](tb, "the job's link", `document.querySelector('`+item("jobs-failed")+` a[href$="/ui/jobs/`+id+`"]').getAttribute('href')`); href != "/ui/jobs/"+id {
		t.Errorf("failed job link %q", href)
	}
	if eval[bool](tb, "nothing-needs-attention shown", shownJS(tid("attention-none"))) {
		t.Error("'nothing needs attention' shows beside the items")
	}
}

// TestBrowserPhoneCards: at phone width (390 px) the wide tables (jobs,
// agents, revocations) become a card per row, each value with its column's
// name, and every row's links and actions are on the screen.
func TestBrowserPhoneCards(t *testing.T) {
	e := startDashboard(t, nil)
	reader := e.userToken("reader", auth.ScopeJobsRead)
	e.offlineAgent(reader, "c9", "role=client", "site=a-rather-long-site-name")
	bob := e.userToken("bob", auth.ScopeJobsWrite)
	e.createJob(bob, url.Values{"action": {"download"}, "targets": {"role=client"}, "server": {"data.lab.example"}, "RUNID": {"a-long-run-id-for-a-phone"}})
	if status, b := e.api("POST", "/api/v1/revocations", e.adminToken(), `{"kind":"booking","value":"bk-phone","ttl":"1h","reason":"booking cancelled"}`); status != 201 && status != 200 {
		t.Fatalf("revoke: %d %s", status, b)
	}

	tb := newTab(t, e.browser, "phone")
	tb.run("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulatePortrait))
	e.loginTo(tb, alice(), "/ui/jobs", "jobs")
	for _, c := range []struct{ page, row, action, label string }{
		{"/ui/jobs", tid("job-row"), tid("job-row") + ` a`, "Owner"},
		{"/ui/agents", tid("agent-row"), tid("agent-forget"), "Last seen"},
		{"/ui/revocations", tid("rev-row"), tid("rev-remove"), "Reason"},
	} {
		tb.run("open "+c.page, chromedp.Navigate(e.url+c.page))
		tb.waitJS(stepTimeout, c.page+"'s row", `document.querySelector('`+c.row+`') !== null`)
		type layout struct {
			Display     string   `json:"display"`
			ActionRight float64  `json:"actionRight"`
			Labels      []string `json:"labels"`
			PageWidth   float64  `json:"pageWidth"`
		}
		l := eval[layout](tb, c.page+" layout", `(() => {
			const tr = document.querySelector('`+c.row+`');
			const a = document.querySelector('`+c.action+`');
			return { display: getComputedStyle(tr).display, actionRight: a.getBoundingClientRect().right,
				labels: [...tr.cells].map((td) => td.dataset.label || ''), pageWidth: document.documentElement.scrollWidth };
		})()`)
		if l.Display != "block" {
			t.Errorf("%s: a row is displayed %q at 390 px, want a card (block)", c.page, l.Display)
		}
		if l.ActionRight <= 0 || l.ActionRight > 390 || l.PageWidth > 390 {
			wide := eval[string](tb, "what is too wide", `[...document.querySelectorAll('main *')].filter((el) => el.getBoundingClientRect().right > innerWidth).slice(0, 5).map((el) => el.tagName + '.' + el.className + '#' + el.id + '[' + (el.dataset.testid || '') + ']').join(', ')`)
			t.Errorf("%s: the row's action ends at %v px, the page is %v px wide, on a 390 px screen (too wide: %s)", c.page, l.ActionRight, l.PageWidth, wide)
		}
		if !slices.Contains(l.Labels, c.label) {
			t.Errorf("%s: the cells are labelled %q, want %q among them", c.page, l.Labels, c.label)
		}
	}
}
