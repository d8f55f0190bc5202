package server

// Real-browser tests of the dashboard as an operator's tool (issue 17):
// hidden controls stay hidden, a job page one can diagnose from, stale data
// marked, lists that say how fresh they are, the jobs list and the audit
// log one can search, and screenshots of every page at desktop and phone
// width kept as artefacts.

import (
	"net/url"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
)

// shownJS is a JS expression: the element sel finds is rendered (present,
// and neither it nor an ancestor is display:none).
func shownJS(sel string) string {
	return `(() => { const el = document.querySelector('` + sel + `'); return el !== null && el.getClientRects().length > 0; })()`
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
