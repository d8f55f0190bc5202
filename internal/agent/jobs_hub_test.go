package agent

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestJobWithRealHub: the agent against the real hub (internal/server
// with jobs): a job created through the jobs API runs the action here, its
// metrics and output file reach the hub, and the job completes.
func TestJobWithRealHub(t *testing.T) {
	one, hundred := 1.0, 100.0
	count := act("count", time.Minute, "/bin/sh", "-c",
		`echo "fetching $SWITCHBOARD_PARAM_COUNT from $1"; printf '{{"bytes_read": %d}}' $((SWITCHBOARD_PARAM_COUNT * 10)) > "$SWITCHBOARD_RESULT"; echo report > "$SWITCHBOARD_OUTPUT/report.txt"`,
		"sh", "{server}")
	count.Params = []jobproto.Param{
		{Name: "server", Type: jobproto.ParamString, Required: true, Pattern: "[a-z0-9.-]+"},
		{Name: "count", Type: jobproto.ParamInt, Min: &one, Max: &hundred, Default: "1"},
	}
	u, _, cfg := startHubWithAgent(t, count)
	api := u.do
	st, loc := api("POST", "/api/v1/jobs", url.Values{"ACTION": {"count"}, "TARGETS": {"role=client"}, "SERVER": {"data-a.example"}, "COUNT": {"4"}, "PHASE": {"RUN"}})
	if st != http.StatusSeeOther {
		t.Fatalf("create: %d %s", st, loc)
	}
	id := strings.TrimPrefix(string(loc), u.url+"/api/v1/jobs/")
	var doc struct {
		Phase   string `json:"phase"`
		Results []struct {
			ID string `json:"id"`
		} `json:"results"`
		JobInfo struct {
			Runs []struct {
				Agent   string          `json:"agent"`
				State   string          `json:"state"`
				Metrics json.RawMessage `json:"metrics"`
			} `json:"runs"`
		} `json:"jobInfo"`
	}
	wait.For(t, "the job completed", func() bool {
		st, b := api("GET", "/api/v1/jobs/"+id, nil)
		if st != http.StatusOK {
			t.Fatalf("job: %d %s", st, b)
		}
		json.Unmarshal(b, &doc)
		if doc.Phase == "ERROR" {
			t.Fatalf("job failed: %s", b)
		}
		return doc.Phase == "COMPLETED"
	})
	if len(doc.JobInfo.Runs) != 1 || doc.JobInfo.Runs[0].State != "succeeded" || string(doc.JobInfo.Runs[0].Metrics) != `{"bytes_read":40}` {
		t.Fatalf("runs %+v", doc.JobInfo.Runs)
	}
	if st, b := api("GET", "/api/v1/jobs/"+id+"/results/c1/report.txt", nil); st != http.StatusOK || string(b) != "report\n" {
		t.Fatalf("file: %d %q", st, b)
	}
	wait.For(t, "the state directory cleared", func() bool { return len(stateFiles(t, cfg.Agent.StateDir)) == 0 })
}
