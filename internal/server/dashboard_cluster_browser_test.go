package server

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
)

// 8. The Overview of a cluster (issue 14 item 4): node a's page lists a and
// b with their counts and the totals; when b goes down, its row is marked
// down and the cluster degraded within 3 s, without reloading the page.
func TestBrowserOverviewShowsEveryNode(t *testing.T) {
	chromiumPath(t)
	network, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	busA, err := network.Join("a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busA.Close() })
	busB, err := network.Join("b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busB.Close() })

	b := startServer(t, func(c *Config, d *Deps) { c.NodeID, d.Bus = "b", busB })
	b.dial("lab/cam", b.token("lab/cam", "read"))
	b.dial("lab/cam", b.token("lab/cam", "write"))
	b.dial("lab/mic", b.token("lab/mic", "read"))

	p := startIdP(t)
	reqs := newRequestLog()
	a := startServer(t, func(c *Config, d *Deps) {
		c.NodeID, d.Bus = "a", busA
		d.Logger = slog.New(reqs)
		c.Web.OIDC = p.config("alice", "vic")
	})
	e := &dashEnv{testServer: a, idp: p, browser: startBrowser(t), reqs: reqs}
	tb := newTab(t, e.browser, "admin")
	e.loginTo(tb, alice(), "/ui/", "overview")
	tb.waitLive()

	rowA, rowB := `document.querySelector('[data-testid="node-row"][data-node="a"]')`, `document.querySelector('[data-testid="node-row"][data-node="b"]')`
	// b: three connections on two topics; a: the page's own two (stats
	// and agents) on two topics; the totals add them up.
	tb.waitJS(stepTimeout, "both nodes up with their counts", rowA+` && `+rowA+`.dataset.status === 'up' && `+rowB+` && `+rowB+`.dataset.status === 'up' && `+
		rowB+`.cells[2].textContent === '3' && `+rowB+`.cells[3].textContent === '2' && `+rowA+`.cells[2].textContent === '2' && `+
		`document.querySelector('[data-testid="total-connections"]').textContent === '5' && `+
		`document.querySelector('[data-testid="cluster-health"]').dataset.health === 'ok'`)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	busB.Close()
	start := time.Now()
	tb.waitJS(3*time.Second, "b marked down within 3 s", rowB+` && `+rowB+`.dataset.status === 'down' && `+
		`document.querySelector('[data-testid="cluster-health"]').dataset.health === 'degraded' && `+
		`document.querySelector('[data-testid="total-connections"]').textContent === '2'`)
	t.Logf("b marked down on the page after %v", time.Since(start).Round(time.Millisecond))
}
