package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// scraperMetrics are series that Prometheus makes itself, not a node.
var scraperMetrics = map[string]bool{"up": true}

// TestMonitoringNamesExportedMetrics: every metric that the Grafana
// dashboard and the Prometheus alert rules in deploy/monitoring name, and
// every label they select on, is exported by a real node at /metrics
// after some traffic (relayed messages, a drop, a failed access, a
// revocation); and both name the metrics of each area the issue asks for.
func TestMonitoringNamesExportedMetrics(t *testing.T) {
	exprs := monitoringExpressions(t)
	s := servertest.Start(t, func(c *server.Config, _ *server.Deps) { c.MetricsListen = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Traffic: a message relayed, a message dropped (a reader may not
	// write), an access refused, a revocation recorded.
	reader := s.Dial(t, "lab", auth.ScopeRead)
	writer := s.Dial(t, "lab", auth.ScopeRead, auth.ScopeWrite)
	if err := writer.Write(ctx, client.Text, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := reader.Read(ctx); err != nil || string(msg) != "hello" {
		t.Fatalf("relay: %q %v", msg, err)
	}
	_ = reader.Write(ctx, client.Text, []byte("not permitted"))
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/session/lab", nil)
	req.Header.Set("Authorization", "Bearer not-a-token")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	req, _ = http.NewRequest(http.MethodPost, s.URL+"/api/v1/revocations", strings.NewReader(`{"kind":"booking","value":"b1","ttl":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+s.Token(t, "", auth.ScopeDeny))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("revoke: %v %v %s", resp.Status, err, b)
	} else {
		resp.Body.Close()
	}

	var exported map[string]map[string]bool // metric name → its label names
	wait.For(t, "the drop to be counted", func() bool {
		exported = scrape(t, "http://"+s.MetricsAddr().String()+"/metrics")
		return exported["switchboard_drops_total"] != nil
	})

	selector := regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	matcher := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	named := map[string]bool{}
	for _, e := range exprs {
		for _, name := range metricNames(e.expr) {
			named[name] = true
			if _, ok := exported[name]; !ok && !scraperMetrics[name] {
				t.Errorf("%s: %s names %s, which a node does not export", e.where, e.expr, name)
			}
		}
		for _, m := range selector.FindAllStringSubmatch(stripStrings(e.expr), -1) {
			labels, ok := exported[m[1]]
			if !ok {
				continue
			}
			for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
				if l := lm[1]; !labels[l] && l != "instance" && l != "job" { // instance and job: the scraper's
					t.Errorf("%s: %s selects on label %q of %s, which has only %v", e.where, e.expr, l, m[1], keys(labels))
				}
			}
		}
	}
	// The areas the dashboard and the alerts must cover.
	for _, name := range []string{"switchboard_connections", "switchboard_drops_total", "switchboard_queued_bytes",
		"switchboard_access_total", "switchboard_jobs_ended_total", "switchboard_cluster_degraded", "switchboard_cluster_member_up"} {
		if !named[name] {
			t.Errorf("deploy/monitoring does not use %s", name)
		}
	}
}

// expression is one PromQL expression and where it is.
type expression struct{ where, expr string }

// monitoringExpressions reads the alert rules' and the dashboard's
// expressions (panels in rows included, and the template variables'
// queries).
func monitoringExpressions(t *testing.T) []expression {
	t.Helper()
	dir := filepath.Join(moduleRoot(t), "deploy", "monitoring")
	var out []expression

	b, err := os.ReadFile(filepath.Join(dir, "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct{ Alert, Record, Expr string }
		}
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("alerts.yaml group %s: a rule without alert or expr: %+v", g.Name, r)
			}
			out = append(out, expression{"alerts.yaml " + r.Alert, r.Expr})
		}
	}
	n := len(out)

	b, err = os.ReadFile(filepath.Join(dir, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string
		Targets []struct{ Expr string }
		Panels  json.RawMessage
	}
	var dash struct {
		Title      string
		UID        string
		Panels     []panel
		Templating struct {
			List []struct {
				Name  string
				Query any
			}
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("grafana-dashboard.json has no title or uid")
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, expression{"grafana-dashboard.json panel " + p.Title, tg.Expr})
			}
			var inner []panel
			if len(p.Panels) > 0 && json.Unmarshal(p.Panels, &inner) == nil {
				walk(inner)
			}
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		var q string
		switch x := v.Query.(type) {
		case string:
			q = x
		case map[string]any:
			q, _ = x["query"].(string)
		}
		if strings.HasPrefix(q, "label_values(") {
			out = append(out, expression{"grafana-dashboard.json variable " + v.Name, strings.TrimPrefix(q, "label_values")})
		}
	}
	if n < 5 || len(out)-n < 10 {
		t.Fatalf("found %d alert expressions and %d dashboard expressions: the files were not read as expected", n, len(out)-n)
	}
	return out
}

var (
	quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	ident  = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// stripStrings blanks the string literals of a PromQL expression.
func stripStrings(expr string) string { return quoted.ReplaceAllString(expr, `""`) }

// metricNames returns the metric names in a PromQL expression: the
// identifiers of this exporter's families (switchboard_, process_, go_)
// and the scraper's (up), outside string literals and label matchers.
func metricNames(expr string) []string {
	expr = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(stripStrings(expr), "{}")
	var names []string
	for _, id := range ident.FindAllString(expr, -1) {
		if strings.HasPrefix(id, "switchboard_") || strings.HasPrefix(id, "process_") || strings.HasPrefix(id, "go_") || scraperMetrics[id] {
			names = append(names, id)
		}
	}
	return names
}

// scrape reads a Prometheus text exposition: each sample's name (with
// _bucket, _sum, _count as written) and the label names it carries.
func scrape(t *testing.T, url string) map[string]map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
	out := map[string]map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		var labels string
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			name, labels = line[:i], line[i:]
			if j := strings.LastIndexByte(labels, '}'); j >= 0 {
				labels = labels[:j+1]
			}
		}
		_ = rest
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, m := range label.FindAllStringSubmatch(labels, -1) {
			out[name][m[1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
