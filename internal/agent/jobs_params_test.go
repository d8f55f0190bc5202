package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// hubUser is a user of a real hub's job API (internal/server with jobs).
type hubUser struct {
	t          *testing.T
	url, token string
}

// startHubWithAgent starts a real hub and an agent "c1" (labels
// role=client, site=UNL) offering actions, waits until the hub lists the
// agent, and returns a user with jobs:read and jobs:write.
func startHubWithAgent(t *testing.T, actions ...ActionConfig) (hubUser, *Agent, *Config) {
	t.Helper()
	r := startRelay(t) // with the jobs API: servertest gives the node a results directory
	agentClaims := r.Claims("c1", auth.ScopeAgent)
	agentClaims.Prefix, agentClaims.Agent, agentClaims.Labels, agentClaims.Subject = AgentPrefix, "c1", []string{"role=client", "site=*"}, "agent-c1"
	agentTok := r.Sign(t, agentClaims)
	userClaims := r.Claims("", auth.ScopeJobsWrite, auth.ScopeJobsRead)
	userClaims.Prefix, userClaims.Subject = "", "alice"
	u := hubUser{t: t, url: r.URL, token: r.Sign(t, userClaims)}
	cfg := &Config{URL: r.URL, TokenFile: writeFile(t, "agent.jwt", agentTok), Agent: &AgentConfig{
		ID: "c1", Labels: []string{"role=client", "site=UNL"}, StateDir: t.TempDir(), Actions: actions}}
	a, _ := startStoppable(t, cfg, jobOpts)
	wait.For(t, "the agent registered", func() bool { return status(t, a, "agent").Connected })
	// The link is up before the hub has recorded the agent: wait for the
	// hub to list it.
	wait.For(t, "the hub to list the agent", func() bool {
		_, b := u.do("GET", "/api/v1/agents", nil)
		return strings.Contains(string(b), `"id":"c1","connected":true`)
	})
	return u, a, cfg
}

// do sends a request (form-encoded when form is not nil) and returns the
// status and body; a 303's body is its Location.
func (u hubUser) do(method, path string, form url.Values) (int, []byte) {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u.url+path, body)
	req.Header.Set("Authorization", "Bearer "+u.token)
	req.Header.Set("Accept", "application/json") // the jobs API answers UWS XML by default
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusSeeOther {
		return resp.StatusCode, []byte(resp.Header.Get("Location"))
	}
	return resp.StatusCode, b
}

// create creates and runs a job and returns its id.
func (u hubUser) create(form url.Values) string {
	u.t.Helper()
	form.Set("PHASE", "RUN")
	st, loc := u.do("POST", "/api/v1/jobs", form)
	if st != http.StatusSeeOther {
		u.t.Fatalf("create %v: %d %s", form, st, loc)
	}
	return strings.TrimPrefix(string(loc), u.url+"/api/v1/jobs/")
}

// finished waits for a job to reach COMPLETED or ERROR and returns the
// phase and the state of each run.
func (u hubUser) finished(id string) (phase string, runs []string) {
	u.t.Helper()
	var doc struct {
		Phase   string `json:"phase"`
		JobInfo struct {
			Runs []struct {
				State string `json:"state"`
			} `json:"runs"`
		} `json:"jobInfo"`
	}
	wait.For(u.t, "job "+id+" finished", func() bool {
		st, b := u.do("GET", "/api/v1/jobs/"+id, nil)
		if st != http.StatusOK {
			u.t.Fatalf("job: %d %s", st, b)
		}
		json.Unmarshal(b, &doc)
		return doc.Phase == "COMPLETED" || doc.Phase == "ERROR"
	})
	for _, r := range doc.JobInfo.Runs {
		runs = append(runs, r.State)
	}
	return doc.Phase, runs
}

// envAction declares the env program with one parameter as its first
// argument: env reads a value starting with '-' as its option, and
// -S/--split-string makes env run any command the value names.
func envAction(name string, arg jobproto.Param) ActionConfig {
	a := act(name, time.Minute, "env", "{arg}", "true")
	a.PassEnv = []string{"PATH"}
	arg.Name = "arg"
	a.Params = []jobproto.Param{arg}
	return a
}

// TestJobOptionInjectionRefusedByHub performs the attack of issue 12 item
// 1 through the real hub's job API: a parameter value that env would read
// as -S (run this command) is refused at job creation with a 400 naming the
// parameter and why, and the command never runs. A value of a parameter
// that opts in (allow_dash) still runs, and harmless values run.
func TestJobOptionInjectionRefusedByHub(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "injected")
	u, _, _ := startHubWithAgent(t,
		envAction("env", jobproto.Param{Type: jobproto.ParamString, Required: true}),
		envAction("unset", jobproto.Param{Type: jobproto.ParamString, Required: true, AllowDash: true, Pattern: `-u[A-Z_]+`}),
	)
	// The allowance is part of the declaration the hub knows.
	if _, b := u.do("GET", "/api/v1/agents", nil); !strings.Contains(string(b), `"allow_dash":true`) {
		t.Fatalf("the hub's agents list lacks allow_dash: %s", b)
	}
	for _, tc := range []struct{ value, want string }{
		{"-S/usr/bin/touch " + marker, "parameter arg: starts with '-', which the program could read as an option"},
		{"--split-string=/usr/bin/touch " + marker, "parameter arg: starts with '-'"},
		{"X=1\n/usr/bin/touch " + marker, "parameter arg: contains the control character U+000A"},
	} {
		st, b := u.do("POST", "/api/v1/jobs", url.Values{"ACTION": {"env"}, "TARGETS": {"role=client"}, "ARG": {tc.value}, "PHASE": {"RUN"}})
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if st != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Error.Code != "invalid_parameter" || !strings.Contains(e.Error.Message, tc.want) {
			t.Errorf("create with arg %q: %d %s; want 400 invalid_parameter %q", tc.value, st, b, tc.want)
		}
	}
	var list struct {
		Jobs []json.RawMessage `json:"jobs"`
	}
	if st, b := u.do("GET", "/api/v1/jobs", nil); st != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list.Jobs) != 0 {
		t.Errorf("jobs after the refusals: %d %s; want none recorded", st, b)
	}
	// What is declared still runs: a harmless value, and a dash where the
	// declaration allows one (env -uHOME true).
	for action, value := range map[string]string{"env": "X=1", "unset": "-uHOME"} {
		id := u.create(url.Values{"ACTION": {action}, "TARGETS": {"role=client"}, "ARG": {value}})
		if phase, runs := u.finished(id); phase != "COMPLETED" || len(runs) != 1 || runs[0] != "succeeded" {
			t.Fatalf("%s %q: phase %s, runs %v", action, value, phase, runs)
		}
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the injected command ran: %s exists (%v)", marker, err)
	}
}

// TestAgentRejectsOptionValueFromHub: the agent does not trust the hub. A
// run whose parameter would be an option of the program (or carries a
// control character) is answered rejected and nothing runs, even when the
// hub (here a fake one) sent it.
func TestAgentRejectsOptionValueFromHub(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "injected")
	h := newFakeHub(t)
	cfg := jobTestConfig(t, h,
		envAction("env", jobproto.Param{Type: jobproto.ParamString, Required: true}),
		envAction("unset", jobproto.Param{Type: jobproto.ParamString, Required: true, AllowDash: true}),
	)
	a, _ := startStoppable(t, cfg, jobOpts)
	// The agent announces the allowance in its declaration.
	if hello := h.waitN(jobproto.TypeHello, "", 1); !strings.Contains(string(hello), `"allow_dash":true`) {
		t.Fatalf("hello lacks allow_dash: %s", hello)
	}
	for job, tc := range map[string]struct{ value, want string }{
		"dash-s":     {"-S/usr/bin/touch " + marker, "parameter arg: starts with '-', which the program could read as an option"},
		"long-split": {"--split-string=/usr/bin/touch " + marker, "parameter arg: starts with '-'"},
		"escape":     {"X=\x1b]0;title\x07", "parameter arg: contains the control character U+001B"},
	} {
		h.run(job, "env", map[string]string{"arg": tc.value}, 0)
		r := h.result(job, 1)
		if r.Outcome != jobproto.OutcomeRejected || r.ExitCode != -1 || !strings.Contains(r.Error, tc.want) {
			t.Errorf("%s: result %+v, want rejected with %q", job, r, tc.want)
		}
	}
	if n := len(h.messages(jobproto.TypeStarted, "")); n != 0 {
		t.Fatalf("%d runs started", n)
	}
	// Declared values still run, after the refused ones.
	h.run("plain", "env", map[string]string{"arg": "X=1"}, 0)
	h.run("opted-in", "unset", map[string]string{"arg": "-uHOME"}, 0)
	for _, job := range []string{"plain", "opted-in"} {
		if r := h.result(job, 1); r.Outcome != jobproto.OutcomeSucceeded {
			t.Fatalf("%s: %+v", job, r)
		}
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the injected command ran: %s exists (%v)", marker, err)
	}
	if l := status(t, a, "agent").Local; *l.RunsStarted != 2 {
		t.Fatalf("runs started: %d, want 2", *l.RunsStarted)
	}
}
