package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
)

// TestBrowserEnrolAgent: an admin enrols an agent from the Agents page's
// form; the token is shown once with a copy button, is in no URL the
// browser or the server saw, and an agent connects with it.
func TestBrowserEnrolAgent(t *testing.T) {
	e := startDashboard(t, nil)
	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/agents", "agents")

	// A bad id is refused in the page, before any request.
	tb.run("a bad id",
		chromedp.SendKeys(chromedp.CSS(tid("enrol-id")), "a/b"),
		chromedp.Click(chromedp.CSS(tid("enrol-submit"))),
	)
	tb.waitJS(stepTimeout, "the id error", `document.querySelector('[data-testid="enrol-id-error"]').textContent !== ''`)
	if n := len(e.reqs.find("POST", "/ui/api/api/v1/agents/enrol")); n != 0 {
		t.Fatalf("%d enrol requests for a bad id", n)
	}

	eval[bool](tb, "clear the id and the lifetime", `(() => {
		document.querySelector('[data-testid="enrol-id"]').value = '';
		document.querySelector('[data-testid="enrol-ttl"]').value = '';
		return true;
	})()`)
	tb.run("fill the form",
		chromedp.SendKeys(chromedp.CSS(tid("enrol-id")), "c9"),
		chromedp.SendKeys(chromedp.CSS(tid("enrol-labels")), "role=client, site=*"),
		chromedp.SendKeys(chromedp.CSS(tid("enrol-ttl")), "2h"),
		chromedp.Click(chromedp.CSS(tid("enrol-submit"))),
	)
	tb.waitJS(stepTimeout, "the token shown", `!document.querySelector('[data-testid="enrol-result"]').hidden`)
	token := eval[string](tb, "the token", `document.querySelector('[data-testid="enrol-token"]').value`)
	if strings.Count(token, ".") != 2 {
		t.Fatalf("token field %q", token)
	}
	if got := tb.text(tid("enrol-subject")); got != "agent:c9" {
		t.Errorf("subject %q", got)
	}
	if got := tb.text(tid("enrol-result-id")); got != "c9" {
		t.Errorf("agent %q", got)
	}
	tb.run("copy", chromedp.Click(chromedp.CSS(tid("enrol-copy"))))
	tb.waitJS(stepTimeout, "the copy status", `document.querySelector('[data-testid="enrol-copy-status"]').textContent !== ''`)

	if u := tb.location().String(); strings.Contains(u, token) {
		t.Fatalf("the token is in the page's URL: %s", u)
	}
	if st := e.reqs.find("POST", "/ui/api/api/v1/agents/enrol"); len(st) != 1 || st[0] != 200 {
		t.Fatalf("enrol requests: %v", st)
	}
	e.reqs.mu.Lock()
	for _, q := range e.reqs.reqs {
		if strings.Contains(q.Path, token) {
			t.Errorf("the token is in a logged path: %s", q.Path)
		}
	}
	e.reqs.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := bench.DialAgent(ctx, e.url, token, jobproto.Hello{Agent: "c9", Labels: []string{"role=client", "site=UNL"}}, nil)
	if err != nil {
		t.Fatalf("an agent with the token from the page: %v", err)
	}
	a.CloseNow()
}
