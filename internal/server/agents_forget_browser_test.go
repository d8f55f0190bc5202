package server

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-hub/switchboard/internal/auth"
)

// TestBrowserForgetAgent: on the Agents page an admin forgets an offline
// agent through its Forget button and the confirmation; the row leaves and
// the API no longer lists it. A connected agent has no Forget button, and a
// viewer sees none.
func TestBrowserForgetAgent(t *testing.T) {
	e := startDashboard(t, nil)
	reader := e.userToken("reader", auth.ScopeJobsRead)
	e.offlineAgent(reader, "c2")
	e.offlineAgent(reader, "c3")
	e.agent("c1")

	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/agents", "agents")
	forgetOf := func(id string) string { return `tr[data-agent-id="` + id + `"] ` + tid("agent-forget") }
	tb.waitJS(stepTimeout, "the offline agents' Forget buttons",
		`document.querySelector('`+forgetOf("c2")+`') !== null && document.querySelector('`+forgetOf("c3")+`') !== null`)
	if eval[bool](tb, "c1's Forget button", `document.querySelector('`+forgetOf("c1")+`') !== null`) {
		t.Fatal("the connected agent c1 has a Forget button")
	}

	tb.run("forget c2", chromedp.Click(chromedp.CSS(forgetOf("c2"))))
	tb.waitJS(stepTimeout, "the confirmation", `document.querySelector('`+tid("confirm-dialog")+`') !== null`)
	if n := len(e.reqs.find("DELETE", "/ui/api/api/v1/agents/c2")); n != 0 {
		t.Fatalf("%d DELETE requests before the confirmation", n)
	}
	tb.run("confirm", chromedp.Click(chromedp.CSS(tid("confirm-ok"))))
	tb.waitJS(stepTimeout, "c2's row gone, the dialog closed",
		`document.querySelector('tr[data-agent-id="c2"]') === null && document.querySelector('`+tid("confirm-dialog")+`') === null`)
	if st := e.reqs.find("DELETE", "/ui/api/api/v1/agents/c2"); len(st) != 1 || st[0] != 204 {
		t.Fatalf("DELETE requests for c2: %v, want one 204", st)
	}
	known := e.agentIDs(reader)
	if _, ok := known["c2"]; ok || len(known) != 2 {
		t.Fatalf("agents after forgetting c2 in the page: %v, want c1 and c3", known)
	}

	tv := newTab(t, e.browser, "viewer")
	e.loginTo(tv, vic(), "/ui/agents", "agents")
	tv.waitJS(stepTimeout, "c3's row", `document.querySelector('tr[data-agent-id="c3"]') !== null`)
	if eval[bool](tv, "a Forget button", `document.querySelector('`+tid("agent-forget")+`') !== null`) {
		t.Fatal("a viewer sees a Forget button")
	}
}
