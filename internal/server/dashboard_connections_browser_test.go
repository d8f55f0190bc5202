package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// openIdleWith opens n idle connections on the server's relay, the i-th
// with info(i), and returns them; they close when the test ends, if not
// before.
func (e *dashEnv) openIdleWith(t *testing.T, n int, info func(i int) relay.Info) []*idleConn {
	t.Helper()
	var wg sync.WaitGroup
	conns := make([]*idleConn, n)
	before := e.relay.Stats().Connections
	for i := range n {
		conns[i] = newIdleConn()
		in := info(i)
		wg.Go(func() { e.relay.Accept(context.Background(), conns[i], in) })
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close(0, "")
		}
		wg.Wait()
	})
	wait.For(t, fmt.Sprintf("%d idle connections", n), func() bool { return e.relay.Stats().Connections >= before+n })
	return conns
}

// feedBytesJS, run before a page's scripts, counts in window.__feedBytes()
// what the page receives of its live data: its websockets' messages
// (wsBytesJS) and the answers of the connections API (their transfer size,
// headers included).
const feedBytesJS = wsBytesJS + `
performance.setResourceTimingBufferSize(100000);
window.__connAnswers = () => performance.getEntriesByType('resource').filter((e) => e.name.includes('/ui/api/api/v1/connections'));
window.__feedBytes = () => window.__wsBytes + window.__connAnswers().reduce((n, e) => n + e.transferSize, 0);`

// TestBrowserConnectionsFeedCost: a Connections tab on a node with 2,000
// connections receives under 5 KB/s (the page it shows and its changes,
// not every connection) while it stays live (it asks at every stats
// period), and the server's filter, sort and paging are what it shows.
func TestBrowserConnectionsFeedCost(t *testing.T) {
	e := startDashboard(t, func(c *Config) { c.StatsEvery = time.Second })
	e.openIdle(t, 2000) // topics lab/t-{i%100}, bookings bk-{i}
	tb := newTab(t, e.browser, "connections")
	tb.onNewDocument(feedBytesJS)
	e.loginTo(tb, alice(), "/ui/connections", "connections")
	tb.waitLive()
	const count = `document.querySelector('[data-testid="conn-count"]')`
	tb.waitJS(stepTimeout, "2,000 connections counted", `Number(`+count+`.dataset.total) >= 2001 && document.querySelectorAll('[data-testid="conn-row"]').length === 100`)

	const measure = 6 * time.Second
	startBytes := eval[float64](tb, "bytes so far", `window.__feedBytes()`)
	startAnswers := eval[int](tb, "answers so far", `window.__connAnswers().length`)
	start := time.Now()
	tb.waitJS(measure+2*time.Second, "the measuring window to pass", fmt.Sprintf(`(() => { const t0 = window.__t0 || (window.__t0 = performance.now()); return performance.now() - t0 >= %d; })()`, measure.Milliseconds()))
	got := eval[float64](tb, "bytes", `window.__feedBytes()`) - startBytes
	answers := eval[int](tb, "answers", `window.__connAnswers().length`) - startAnswers
	elapsed := time.Since(start)
	rate := got / elapsed.Seconds()
	t.Logf("Connections at 2,000 connections: %.0f bytes of live data (%d answers) in %v: %.0f B/s (load %s)", got, answers, elapsed.Round(time.Millisecond), rate, loadAvg())
	if rate >= 5000 {
		t.Errorf("the Connections page's live data is %.0f B/s at 2,000 connections, want under 5 KB/s", rate)
	}
	// A notice a second: the page asked again several times in the window.
	if answers < 3 {
		t.Errorf("%d answers in %v at a stats period of 1 s: the page is not live", answers, elapsed.Round(time.Millisecond))
	}

	// The server filters, sorts and pages: "bk-19" is bk-19, bk-190…199 and
	// bk-1900…1999 (111); by booking, descending, page 2 is the last 11:
	// bk-1908 down to bk-1900, then bk-190 and bk-19.
	bookings := `[...document.querySelectorAll('[data-testid="conn-row"]')].map((tr) => tr.cells[4].textContent).join(' ')`
	tb.run("filter", chromedp.SendKeys(chromedp.CSS(tid("conn-filter")), "bk-19"))
	tb.waitJS(stepTimeout, "the filtered count", count+`.dataset.shown === '111' && document.querySelectorAll('[data-testid="conn-row"]').length === 100`)
	tb.run("sort by booking", chromedp.Click(chromedp.CSS(tid("sort-booking"))))
	tb.waitJS(stepTimeout, "ascending by booking", `document.querySelector('[data-testid="conn-row"]').cells[4].textContent === 'bk-19'`)
	tb.run("descending", chromedp.Click(chromedp.CSS(tid("sort-booking"))))
	tb.waitJS(stepTimeout, "descending by booking", `document.querySelector('[data-testid="conn-row"]').cells[4].textContent === 'bk-1999'`)
	tb.run("next page", chromedp.Click(chromedp.CSS(tid("conn-next"))))
	tb.waitJS(stepTimeout, "page 2 of 2", `document.querySelector('[data-testid="conn-page"]').textContent === 'Page 2 of 2'`)
	want := "bk-1908 bk-1907 bk-1906 bk-1905 bk-1904 bk-1903 bk-1902 bk-1901 bk-1900 bk-190 bk-19"
	tb.waitJS(stepTimeout, "page 2's rows", bookings+` === '`+want+`'`)
	if got := tb.text(tid("conn-count")); got != "Showing 101–111 of 111 connections (filtered from 2,001)" {
		t.Errorf("count %q", got)
	}
	tb.waitJS(stepTimeout, "the view in the URL", `(() => { const q = new URLSearchParams(location.search); return q.get('q') === 'bk-19' && q.get('sort') === 'booking' && q.get('dir') === 'desc' && q.get('page') === '2'; })()`)
}
