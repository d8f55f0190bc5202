package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"switchboard/internal/auth"
	"switchboard/internal/jobproto"
	"switchboard/internal/server"
)

// TestJobWithRealHub: the agent against the real hub (internal/server
// with jobs): a job created through the jobs API runs the action here, its
// metrics and output file reach the hub, and the job completes.
func TestJobWithRealHub(t *testing.T) {
	r := startRelay(t, func(c *server.Config) { c.BlobDir = t.TempDir() })
	sign := func(c auth.Claims, sub string) string {
		now := time.Now()
		c.RegisteredClaims = jwt.RegisteredClaims{Audience: jwt.ClaimStrings{r.url}, Subject: sub,
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now)}
		tok, err := r.key.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	agentTok := sign(auth.Claims{Topic: "c1", Prefix: AgentPrefix, Scopes: []string{auth.ScopeAgent}, Agent: "c1", Labels: []string{"role=client", "site=*"}}, "agent-c1")
	user := sign(auth.Claims{Scopes: []string{auth.ScopeJobsWrite, auth.ScopeJobsRead}}, "alice")

	one, hundred := 1.0, 100.0
	count := act("count", time.Minute, "/bin/sh", "-c",
		`echo "fetching $SWITCHBOARD_PARAM_COUNT from $1"; printf '{{"bytes_read": %d}}' $((SWITCHBOARD_PARAM_COUNT * 10)) > "$SWITCHBOARD_RESULT"; echo report > "$SWITCHBOARD_OUTPUT/report.txt"`,
		"sh", "{server}")
	count.Params = []jobproto.Param{
		{Name: "server", Type: jobproto.ParamString, Required: true, Pattern: "[a-z0-9.-]+"},
		{Name: "count", Type: jobproto.ParamInt, Min: &one, Max: &hundred, Default: "1"},
	}
	cfg := &Config{URL: r.url, TokenFile: writeFile(t, "agent.jwt", agentTok), Agent: &AgentConfig{
		ID: "c1", Labels: []string{"role=client", "site=UNL"}, StateDir: t.TempDir(), Actions: []ActionConfig{count}}}
	a, _ := startStoppable(t, cfg, jobOpts)
	waitFor(t, "the agent registered", func() bool { return status(t, a, "agent").Connected })

	api := func(method, path string, form url.Values) (int, []byte) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, r.url+path, body)
		req.Header.Set("Authorization", "Bearer "+user)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusSeeOther {
			return resp.StatusCode, []byte(resp.Header.Get("Location"))
		}
		return resp.StatusCode, b
	}
	// The link is up before the hub has recorded the agent: wait for the
	// hub to list it.
	waitFor(t, "the hub to list the agent", func() bool {
		_, b := api("GET", "/api/v1/agents", nil)
		return strings.Contains(string(b), `"id":"c1","connected":true`)
	})
	st, loc := api("POST", "/api/v1/jobs", url.Values{"ACTION": {"count"}, "TARGETS": {"role=client"}, "SERVER": {"data-a.example"}, "COUNT": {"4"}, "PHASE": {"RUN"}})
	if st != http.StatusSeeOther {
		t.Fatalf("create: %d %s", st, loc)
	}
	id := strings.TrimPrefix(string(loc), r.url+"/api/v1/jobs/")
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
	waitFor(t, "the job completed", func() bool {
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
	waitFor(t, "the state directory cleared", func() bool { return len(stateFiles(t, cfg.Agent.StateDir)) == 0 })
}
