package server

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/buildinfo"
	"github.com/switchboard-hub/switchboard/internal/control"
)

// TestVersionReported: /healthz names the node and its build, and the
// cluster status report gives every node's version (issue 20 item 3), so
// that a rolling upgrade shows which node runs which release.
func TestVersionReported(t *testing.T) {
	s := startServer(t, nil)
	code, body := s.api(http.MethodGet, "/healthz", "", "")
	var health struct{ Status, Node, Version string }
	if err := json.Unmarshal(body, &health); err != nil || code != http.StatusOK {
		t.Fatalf("/healthz: %d %s (%v)", code, body, err)
	}
	if health.Status != "ok" || health.Node != "n1" || health.Version != buildinfo.Version() || health.Version == "" {
		t.Errorf("/healthz: %s, want status ok, node n1, version %q", body, buildinfo.Version())
	}

	code, body = s.api(http.MethodGet, "/status?node=all", s.adminToken(), "")
	var report control.ClusterReport
	if err := json.Unmarshal(body, &report); err != nil || code != http.StatusOK {
		t.Fatalf("/status?node=all: %d %s (%v)", code, body, err)
	}
	if len(report.Nodes) != 1 || report.Nodes[0].Summary == nil {
		t.Fatalf("/status?node=all: want one node that answered: %s", body)
	}
	if got := report.Nodes[0].Summary.Version; got != buildinfo.Version() {
		t.Errorf("the node's summary has version %q, want %q", got, buildinfo.Version())
	}
}
