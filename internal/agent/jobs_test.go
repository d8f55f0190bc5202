package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// fakeHub is the hub side of the agent control channel, built on
// fakeRelay: it records every message, answers hello with welcome, stores
// uploads, and lets the test send messages and drop the connection.
type fakeHub struct {
	*fakeRelay
	t *testing.T

	mu        sync.Mutex
	welcome   jobproto.Welcome
	autoAck   bool
	closing   bool // close every control connection at once
	conn      *websocket.Conn
	paths     []string // of each control connection
	msgs      []hubMsg
	uploads   map[string][]upload        // "job/agent/name" → each upload
	putStatus func(job, name string) int // 0: store it (201)
}

type hubMsg struct {
	typ, job string
	raw      []byte
	binary   bool // a log chunk
}

type upload struct {
	body          []byte
	sha, auth     string
	contentLength int64
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{fakeRelay: newFakeRelay(t), t: t, autoAck: true, uploads: map[string][]upload{},
		welcome: jobproto.Welcome{Type: jobproto.TypeWelcome, Node: "hub1", MaxFileBytes: 1 << 20, MaxRunBytes: 4 << 20}}
	h.onConn = h.serveConn
	h.onPut = h.servePut
	return h
}

func (h *fakeHub) serveConn(ws *websocket.Conn, path string) {
	h.mu.Lock()
	closing := h.closing
	h.mu.Unlock()
	if closing {
		return
	}
	ws.SetReadLimit(4 << 20)
	ctx := context.Background()
	first := true
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			h.mu.Lock()
			if h.conn == ws {
				h.conn = nil
			}
			h.mu.Unlock()
			return
		}
		var m struct{ Type, Job string }
		binary := typ == websocket.MessageBinary
		if binary { // a log chunk
			hdr, _, err := jobproto.ParseLogChunk(data)
			if err != nil {
				h.t.Errorf("a binary frame that is not a log chunk: %v", err)
			}
			m.Type, m.Job = hdr.Type, hdr.Job
		} else {
			json.Unmarshal(data, &m)
		}
		h.mu.Lock()
		h.msgs = append(h.msgs, hubMsg{typ: m.Type, job: m.Job, raw: data, binary: binary})
		ack := h.autoAck && m.Type == jobproto.TypeResult
		welcome := h.welcome
		if first {
			h.paths = append(h.paths, path)
		}
		h.mu.Unlock()
		if first && m.Type == jobproto.TypeHello {
			first = false
			b, _ := json.Marshal(welcome)
			if ws.Write(ctx, websocket.MessageText, b) != nil {
				return
			}
			h.mu.Lock()
			h.conn = ws
			h.mu.Unlock()
		}
		if ack {
			b, _ := json.Marshal(jobproto.Ack{Type: jobproto.TypeAck, Job: m.Job})
			ws.Write(ctx, websocket.MessageText, b)
		}
	}
}

func (h *fakeHub) servePut(w http.ResponseWriter, r *http.Request) {
	// /api/v1/jobs/{job}/runs/{agent}/files/{name}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/jobs/"), "/")
	if len(parts) != 5 || parts[1] != "runs" || parts[3] != "files" {
		http.Error(w, "bad path "+r.URL.Path, http.StatusBadRequest)
		return
	}
	job, agent, name := parts[0], parts[2], parts[4]
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	h.mu.Lock()
	status := 0
	if h.putStatus != nil {
		status = h.putStatus(job, name)
	}
	if status == 0 {
		sum := sha256.Sum256(body)
		if hex.EncodeToString(sum[:]) != r.Header.Get("X-Content-SHA256") {
			status = http.StatusBadRequest
		} else {
			status = http.StatusCreated
			key := job + "/" + agent + "/" + name
			h.uploads[key] = append(h.uploads[key], upload{body: body, sha: r.Header.Get("X-Content-SHA256"),
				auth: r.Header.Get("Authorization"), contentLength: r.ContentLength})
		}
	}
	h.mu.Unlock()
	w.WriteHeader(status)
}

// send writes v to the agent on the current connection (waiting for one).
func (h *fakeHub) send(v any) {
	h.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	var ws *websocket.Conn
	wait.For(h.t, "a control connection", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		ws = h.conn
		return ws != nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		h.t.Fatalf("send: %v", err)
	}
}

func (h *fakeHub) run(job, action string, params map[string]string, timeout time.Duration) {
	h.t.Helper()
	h.send(jobproto.Run{Type: jobproto.TypeRun, Job: job, Action: action, Params: params, Timeout: jobproto.Duration(timeout)})
}

// drop closes the current control connection without a word.
func (h *fakeHub) drop() {
	h.mu.Lock()
	ws := h.conn
	h.conn = nil
	h.mu.Unlock()
	if ws != nil {
		ws.CloseNow()
	}
}

// messages returns the messages of type typ (and job, if not empty).
func (h *fakeHub) messages(typ, job string) [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out [][]byte
	for _, m := range h.msgs {
		if m.typ == typ && (job == "" || m.job == job) {
			out = append(out, m.raw)
		}
	}
	return out
}

// waitN waits for the n-th message of type typ for job and returns it.
func (h *fakeHub) waitN(typ, job string, n int) []byte {
	h.t.Helper()
	var msgs [][]byte
	wait.For(h.t, fmt.Sprintf("%s message #%d for %q", typ, n, job), func() bool {
		msgs = h.messages(typ, job)
		return len(msgs) >= n
	})
	return msgs[n-1]
}

// result waits for the n-th result of job.
func (h *fakeHub) result(job string, n int) jobproto.Result {
	h.t.Helper()
	var r jobproto.Result
	if err := json.Unmarshal(h.waitN(jobproto.TypeResult, job, n), &r); err != nil {
		h.t.Fatal(err)
	}
	return r
}

// logLines returns the lines of job's log messages on stream, in order.
func (h *fakeHub) logLines(job, stream string) []string {
	var lines []string
	for _, raw := range h.messages(jobproto.TypeLog, job) {
		var l jobproto.Log
		if hdr, text, err := jobproto.ParseLogChunk(raw); err == nil {
			l = hdr
			l.Lines = strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
		} else {
			json.Unmarshal(raw, &l)
		}
		if l.Stream == stream {
			lines = append(lines, l.Lines...)
		}
	}
	return lines
}

// binaryFrames returns how many binary frames (log chunks) came.
func (h *fakeHub) binaryFrames() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if m.binary {
			n++
		}
	}
	return n
}

func (h *fakeHub) uploadsOf(key string) []upload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.uploads[key])
}

// jobTestConfig is an agent-only configuration on h with the given actions.
func jobTestConfig(t *testing.T, h *fakeHub, actions ...ActionConfig) *Config {
	return &Config{URL: h.url, TokenFile: writeFile(t, "token", "agent.token\n"), Agent: &AgentConfig{
		ID: "c1", Labels: []string{"role=client", "site=UNL"}, StateDir: t.TempDir(), Actions: actions}}
}

func act(name string, timeout time.Duration, command ...string) ActionConfig {
	return ActionConfig{Action: jobproto.Action{Name: name, Timeout: jobproto.Duration(timeout)}, Command: command}
}

// jobOpts are the test options: fast retries, a short kill grace.
// jobOpts run actions through the action guard: this test binary
// (TestMain).
var jobOpts = Options{Version: "1.2.3-test", killGrace: 300 * time.Millisecond, logFlush: 20 * time.Millisecond, ActionGuard: os.Args[0]}

// startStoppable starts an agent like startAgent and also returns a stop
// function that waits for it to end (called again by the cleanup).
func startStoppable(t *testing.T, cfg *Config, opts Options) (*Agent, func()) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if opts.Backoff == (Backoff{}) {
		opts.Backoff = fastBackoff
	}
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		a.runPrepared(ctx)
		close(done)
	}()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("agent did not stop within 15 s")
		}
	}
	t.Cleanup(stop)
	return a, stop
}

// stateFiles lists the files and directories left under the state
// directory's results/ and runs/.
func stateFiles(t *testing.T, dir string) []string {
	var out []string
	for _, sub := range []string{"results", "runs"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			out = append(out, sub+"/"+e.Name())
		}
	}
	return out
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestJobHello: the agent dials agent/{id} with its token and says who it
// is and what it offers, without its commands or environment.
func TestJobHello(t *testing.T) {
	h := newFakeHub(t)
	min, max := 1.0, 100.0
	download := act("download", 10*time.Minute, "/usr/bin/printf", "%s %s\n", "{server}", "{count}")
	download.Description = "fetch files and count bytes"
	download.Env = map[string]string{"LANG": "C"}
	download.PassEnv = []string{"HOME"}
	download.Params = []jobproto.Param{
		{Name: "server", Type: jobproto.ParamString, Required: true, Pattern: "[a-z0-9.-]+"},
		{Name: "count", Type: jobproto.ParamInt, Min: &min, Max: &max, Default: "1"},
	}
	cfg := jobTestConfig(t, h, download, act("noop", time.Minute, "/bin/true"))
	a, _ := startStoppable(t, cfg, jobOpts)
	raw := h.waitN(jobproto.TypeHello, "", 1)

	var hello jobproto.Hello
	if err := json.Unmarshal(raw, &hello); err != nil {
		t.Fatal(err)
	}
	if hello.Agent != "c1" || !slices.Equal(hello.Labels, []string{"role=client", "site=UNL"}) || hello.Version != "1.2.3-test" || len(hello.Running) != 0 {
		t.Fatalf("hello %+v", hello)
	}
	if len(hello.Actions) != 2 || !hello.Actions[0].Equal(&download.Action) || hello.Actions[0].Description != download.Description ||
		hello.Actions[1].Name != "noop" || time.Duration(hello.Actions[1].Timeout) != time.Minute {
		t.Fatalf("actions %+v", hello.Actions)
	}
	for _, secret := range []string{"printf", "command", "LANG", "HOME", "pass_env"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("hello shows %q: %s", secret, raw)
		}
	}
	h.mu.Lock()
	paths := slices.Clone(h.paths)
	h.mu.Unlock()
	if len(paths) != 1 || paths[0] != "/agent/c1" {
		t.Fatalf("control connection on %v, want /agent/c1", paths)
	}
	if toks := h.tokensSeen(); len(toks) == 0 || toks[0] != "agent.token" {
		t.Fatalf("tokens %q", toks)
	}
	wait.For(t, "the agent link up", func() bool { return status(t, a, "agent").Connected })
	st := status(t, a, "agent")
	if st.Kind != "agent" || st.Topic != "c1" || st.Local == nil || st.Local.ResultsPending == nil || *st.Local.ResultsPending != 0 {
		t.Fatalf("status %+v", st)
	}
	srv := httptest.NewServer(a.StatusHandler())
	defer srv.Close()
	metrics := get(t, srv.URL+"/metrics")
	for _, want := range []string{
		`switchboard_host_link_up{link="agent",stream="agent",kind="agent",topic="c1"} 1`,
		`switchboard_host_runs_started_total{link="agent",stream="agent",kind="agent",topic="c1"} 0`,
		`switchboard_host_runs_ended_total{link="agent",stream="agent",kind="agent",topic="c1",outcome="failed"} 0`,
		`switchboard_host_results_pending{link="agent",stream="agent",kind="agent",topic="c1"} 0`,
		`switchboard_host_local_active{link="agent",stream="agent",kind="agent",topic="c1"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s\n%s", want, metrics)
		}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := parser.TextToMetricFamilies(strings.NewReader(metrics)); err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
}

// TestJobRunParamsAndLogs: placeholders are replaced inside their
// argument (no shell: spaces and ; stay in one argument); output lines
// arrive as log messages, cut at MaxLogLineBytes; the result holds the
// tails.
func TestJobRunParamsAndLogs(t *testing.T) {
	t.Run("lines", func(t *testing.T) { testJobRunParamsAndLogs(t, false) }) // a hub before log chunks
	t.Run("chunks", func(t *testing.T) { testJobRunParamsAndLogs(t, true) })
}

func testJobRunParamsAndLogs(t *testing.T, chunks bool) {
	h := newFakeHub(t)
	h.welcome.LogChunks = chunks
	echo := act("echo", time.Minute, "/usr/bin/printf", `%s|\n`, "{msg}", "n={n}", "{{lit}}", "{opt}")
	echo.Params = []jobproto.Param{
		{Name: "msg", Type: jobproto.ParamString, Required: true},
		{Name: "n", Type: jobproto.ParamInt, Default: "7"},
		{Name: "opt", Type: jobproto.ParamString},
	}
	lines := act("lines", time.Minute, "/bin/sh", "-c",
		`i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; echo oops >&2; /usr/bin/printf '%5000s\n' x; /usr/bin/printf 'no newline'`)
	a, _ := startStoppable(t, jobTestConfig(t, h, echo, lines), jobOpts)

	h.run("j1", "echo", map[string]string{"MSG": "a b; echo pwned $(id)"}, 0) // names are case-insensitive
	r := h.result("j1", 1)
	want := "a b; echo pwned $(id)|\nn=7|\n{lit}|\n|\n"
	if r.Outcome != jobproto.OutcomeSucceeded || r.ExitCode != 0 || r.Stdout != want || r.Error != "" {
		t.Fatalf("result %+v", r)
	}
	if got := h.logLines("j1", "stdout"); !slices.Equal(got, []string{"a b; echo pwned $(id)|", "n=7|", "{lit}|", "|"}) {
		t.Fatalf("log lines %q", got)
	}
	var started jobproto.Started
	json.Unmarshal(h.waitN(jobproto.TypeStarted, "j1", 1), &started)
	h.mu.Lock()
	var order []string
	for _, m := range h.msgs {
		if m.job == "j1" && (len(order) == 0 || order[len(order)-1] != m.typ) {
			order = append(order, m.typ)
		}
	}
	h.mu.Unlock()
	if !slices.Equal(order, []string{jobproto.TypeStarted, jobproto.TypeLog, jobproto.TypeResult}) {
		t.Fatalf("message order %q", order)
	}
	if started.StartedAt.IsZero() || r.EndedAt.Before(r.StartedAt) {
		t.Fatalf("started %+v, result %+v", started, r)
	}

	h.run("j2", "lines", nil, 0)
	r = h.result("j2", 1)
	if r.Outcome != jobproto.OutcomeSucceeded {
		t.Fatalf("result %+v", r)
	}
	out := h.logLines("j2", "stdout")
	if len(out) != 3002 {
		t.Fatalf("%d stdout lines, want 3002; drops %d", len(out), status(t, a, "agent").Drops)
	}
	for i := range 3000 {
		if out[i] != "line"+strconv.Itoa(i) {
			t.Fatalf("line %d is %q", i, out[i])
		}
	}
	if len(out[3000]) != jobproto.MaxLogLineBytes || out[3001] != "no newline" {
		t.Fatalf("long line %d bytes, last %q", len(out[3000]), out[3001])
	}
	if n := len(h.messages(jobproto.TypeLog, "j2")); !chunks && (n < 12 || n > 1500) || chunks && n > 100 {
		t.Errorf("%d log messages for 3003 lines: not batched?", n)
	}
	if got := h.binaryFrames(); chunks != (got > 0) {
		t.Errorf("%d binary frames; the welcome's log_chunks is %v", got, chunks)
	}
	if got := h.logLines("j2", "stderr"); !slices.Equal(got, []string{"oops"}) {
		t.Fatalf("stderr lines %q", got)
	}
	if r.Stderr != "oops\n" || len(r.Stdout) != jobproto.MaxTailBytes || !strings.HasSuffix(r.Stdout, "x\nno newline") {
		t.Fatalf("tails: stderr %q, stdout %d bytes", r.Stderr, len(r.Stdout))
	}
	wait.For(t, "counters", func() bool {
		l := status(t, a, "agent").Local
		return *l.RunsStarted == 2 && *l.RunsSucceeded == 2 && *l.Active == 0 && *l.ResultsPending == 0
	})
}

// TestJobEnvironment: the process sees exactly the declared variables,
// the pass_env ones the agent has, and the SWITCHBOARD_* ones.
func TestJobEnvironment(t *testing.T) {
	t.Setenv("SB_TEST_PASS", "passed")
	t.Setenv("SB_TEST_OTHER", "must not be seen")
	t.Setenv("SWITCHBOARD_TOKEN", "must not be seen")
	h := newFakeHub(t)
	env := act("env", time.Minute, "/usr/bin/env")
	env.Env = map[string]string{"FIXED": "1", "LANG": "C"}
	env.PassEnv = []string{"SB_TEST_PASS", "SB_TEST_ABSENT"}
	env.Params = []jobproto.Param{
		{Name: "mode", Type: jobproto.ParamEnum, Values: []string{"fast", "slow"}, Default: "fast"},
		{Name: "max-rate", Type: jobproto.ParamNumber},
		{Name: "unset", Type: jobproto.ParamBool},
	}
	cfg := jobTestConfig(t, h, env)
	startStoppable(t, cfg, jobOpts)
	h.run("job-env", "env", map[string]string{"max-rate": "2.5"}, 0)
	r := h.result("job-env", 1)
	got := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	slices.Sort(got)
	run := filepath.Join(cfg.Agent.StateDir, "runs", "job-env")
	want := []string{
		"FIXED=1", "LANG=C", "SB_TEST_PASS=passed",
		"SWITCHBOARD_AGENT=c1", "SWITCHBOARD_JOB=job-env",
		"SWITCHBOARD_OUTPUT=" + filepath.Join(run, "output"),
		"SWITCHBOARD_PARAM_MAX_RATE=2.5", "SWITCHBOARD_PARAM_MODE=fast",
		"SWITCHBOARD_RESULT=" + filepath.Join(run, "result.json"),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("environment\n got %q\nwant %q", got, want)
	}
}

// TestJobMetricsAndFiles: the metrics file becomes the result's metrics;
// output files are uploaded with their checksum before the result, those
// above max_file_bytes or with bad names are left out and named in error;
// an ack clears the state directory.
func TestJobMetricsAndFiles(t *testing.T) {
	h := newFakeHub(t)
	h.welcome.MaxFileBytes = 1000
	script := `printf '{{"bytes": 42, "per": {{"server-a": 1}}}}\n' > "$SWITCHBOARD_RESULT"
printf 'hello file' > "$SWITCHBOARD_OUTPUT/out.txt"
: > "$SWITCHBOARD_OUTPUT/empty.txt"
/usr/bin/head -c 2000 /dev/zero > "$SWITCHBOARD_OUTPUT/big.bin"
printf x > "$SWITCHBOARD_OUTPUT/.hidden"
/bin/mkdir "$SWITCHBOARD_OUTPUT/sub"
/bin/ln -s /etc/passwd "$SWITCHBOARD_OUTPUT/link"
echo done`
	cfg := jobTestConfig(t, h, act("files", time.Minute, "/bin/sh", "-c", script))
	startStoppable(t, cfg, jobOpts)
	h.run("jf", "files", nil, 0)
	r := h.result("jf", 1)
	if r.Outcome != jobproto.OutcomeSucceeded || string(r.Metrics) != `{"bytes":42,"per":{"server-a":1}}` || r.Stdout != "done\n" {
		t.Fatalf("result %+v metrics %s", r, r.Metrics)
	}
	wantFiles := []jobproto.File{{Name: "empty.txt", Size: 0, SHA256: sha("")}, {Name: "out.txt", Size: 10, SHA256: sha("hello file")}}
	if !slices.Equal(r.Files, wantFiles) {
		t.Fatalf("files %+v", r.Files)
	}
	for _, want := range []string{"big.bin not uploaded", "max_file_bytes 1000", `".hidden" (invalid name)`, `"sub" (not a regular file)`, `"link" (not a regular file)`} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("error %q lacks %q", r.Error, want)
		}
	}
	ups := h.uploadsOf("jf/c1/out.txt")
	if len(ups) != 1 || string(ups[0].body) != "hello file" || ups[0].sha != sha("hello file") || ups[0].auth != "Bearer agent.token" || ups[0].contentLength != 10 {
		t.Fatalf("uploads %+v", ups)
	}
	if e := h.uploadsOf("jf/c1/empty.txt"); len(e) != 1 || e[0].contentLength != 0 || len(h.uploadsOf("jf/c1/big.bin")) != 0 {
		t.Fatal("wrong uploads")
	}
	wait.For(t, "the state directory cleared after the ack", func() bool { return len(stateFiles(t, cfg.Agent.StateDir)) == 0 })
}

// TestJobBadMetrics: a metrics file that is not a JSON object fails the
// run, with a clear error; the output tail is kept.
func TestJobBadMetrics(t *testing.T) {
	h := newFakeHub(t)
	startStoppable(t, jobTestConfig(t, h,
		act("array", time.Minute, "/bin/sh", "-c", `echo '[1, 2]' > "$SWITCHBOARD_RESULT"; echo some output`),
		act("huge", time.Minute, "/bin/sh", "-c", `/usr/bin/head -c 300000 /dev/zero > "$SWITCHBOARD_RESULT"`),
		act("none", time.Minute, "/bin/sh", "-c", `exit 3`),
	), jobOpts)
	h.run("j1", "array", nil, 0)
	h.run("j2", "huge", nil, 0)
	h.run("j3", "none", nil, 0)
	r := h.result("j1", 1)
	if r.Outcome != jobproto.OutcomeFailed || !strings.Contains(r.Error, "not a JSON object") || r.Stdout != "some output\n" || r.Metrics != nil || r.ExitCode != 0 {
		t.Fatalf("result %+v", r)
	}
	r = h.result("j2", 1)
	if r.Outcome != jobproto.OutcomeFailed || !strings.Contains(r.Error, "more than the 262144 allowed") {
		t.Fatalf("result %+v", r)
	}
	r = h.result("j3", 1)
	if r.Outcome != jobproto.OutcomeFailed || r.ExitCode != 3 || r.Error != "exit status 3" || r.Metrics != nil {
		t.Fatalf("result %+v", r)
	}
}

// TestJobRejected: the agent checks the action and the parameters again,
// and refuses a job it already runs.
func TestJobRejected(t *testing.T) {
	h := newFakeHub(t)
	fetch := act("fetch", time.Minute, "/bin/sleep", "{secs}")
	one, hundred := 1.0, 100.0
	fetch.Params = []jobproto.Param{
		{Name: "secs", Type: jobproto.ParamInt, Min: &one, Max: &hundred, Required: true},
		{Name: "server", Type: jobproto.ParamString, Pattern: "[a-z0-9.-]+"},
	}
	cfg := jobTestConfig(t, h, fetch)
	a, _ := startStoppable(t, cfg, jobOpts)
	for job, tc := range map[string]struct {
		action string
		params map[string]string
		want   string
	}{
		"unknown-action": {"rm", nil, `unknown action "rm"`},
		"missing":        {"fetch", nil, "secs: is required"},
		"range":          {"fetch", map[string]string{"secs": "1000"}, "above the maximum 100"},
		"not-int":        {"fetch", map[string]string{"secs": "1; rm -rf /"}, "is not an integer"},
		"pattern":        {"fetch", map[string]string{"secs": "1", "server": "a b"}, "does not match"},
		"extra":          {"fetch", map[string]string{"secs": "1", "cmd": "x"}, "cmd: is not a parameter"},
	} {
		h.run(job, tc.action, tc.params, 0)
		r := h.result(job, 1)
		if r.Outcome != jobproto.OutcomeRejected || r.ExitCode != -1 || !strings.Contains(r.Error, tc.want) {
			t.Errorf("%s: result %+v, want rejected with %q", job, r, tc.want)
		}
	}
	if n := len(h.messages(jobproto.TypeStarted, "")); n != 0 {
		t.Fatalf("%d runs started", n)
	}
	// The same job again while it runs (the hub did not see it start): it
	// is not started twice, nor refused; the agent says again that it
	// started.
	h.run("twice", "fetch", map[string]string{"secs": "60"}, 0)
	var first, again jobproto.Started
	json.Unmarshal(h.waitN(jobproto.TypeStarted, "twice", 1), &first)
	h.run("twice", "fetch", map[string]string{"secs": "1"}, 0)
	json.Unmarshal(h.waitN(jobproto.TypeStarted, "twice", 2), &again)
	if !again.StartedAt.Equal(first.StartedAt) || len(h.messages(jobproto.TypeResult, "twice")) != 0 || *status(t, a, "agent").Local.RunsStarted != 1 {
		t.Fatalf("the run was started again: %+v, %+v", first, again)
	}
	h.send(jobproto.Abort{Type: jobproto.TypeAbort, Job: "twice"})
	if r := h.result("twice", 1); r.Outcome != jobproto.OutcomeAborted {
		t.Fatalf("first run: %+v", r)
	}
	wait.For(t, "counters", func() bool {
		l := status(t, a, "agent").Local
		return *l.RunsStarted == 1 && *l.RunsFailed == 7 && *l.ResultsPending == 0
	})
	wait.For(t, "the state directory cleared", func() bool { return len(stateFiles(t, cfg.Agent.StateDir)) == 0 })
}

// procGone reports whether pid has exited (a zombie counts as gone).
func procGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// TestJobTimeoutKillsGroup: at the timeout the whole process group gets
// SIGTERM, then SIGKILL: a child that ignores SIGTERM is gone too.
func TestJobTimeoutKillsGroup(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	h := newFakeHub(t)
	startStoppable(t, jobTestConfig(t, h,
		act("stubborn", time.Hour, "/bin/sh", "-c", `trap "" TERM; /bin/sleep 60 & echo child=$!; wait; wait`),
		act("polite", 200*time.Millisecond, "/bin/sh", "-c", `/bin/sleep 60 & echo child=$!; wait`),
	), jobOpts)
	for _, tc := range []struct {
		job, action string
		timeout     time.Duration
		want        string
	}{
		{"stubborn", "stubborn", 300 * time.Millisecond, "timed out after 300ms; killed by signal killed"}, // the run's timeout
		{"polite", "polite", 0, "timed out after 200ms; killed by signal terminated"},                      // the action's
	} {
		start := time.Now()
		h.run(tc.job, tc.action, nil, tc.timeout)
		r := h.result(tc.job, 1)
		if r.Outcome != jobproto.OutcomeTimedOut || r.ExitCode != -1 || r.Error != tc.want {
			t.Fatalf("%s: result %+v", tc.job, r)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %v", tc.job, d)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(r.Stdout, "child=")))
		if err != nil {
			t.Fatalf("stdout %q", r.Stdout)
		}
		wait.For(t, "the child sleep gone", func() bool { return procGone(pid) })
	}
}

// TestJobAbort: abort kills the group; the outcome is aborted, with the
// hub's reason.
func TestJobAbort(t *testing.T) {
	h := newFakeHub(t)
	a, _ := startStoppable(t, jobTestConfig(t, h, act("sleep", time.Hour, "/bin/sleep", "60")), jobOpts)
	h.run("ja", "sleep", nil, 0)
	h.waitN(jobproto.TypeStarted, "ja", 1)
	wait.For(t, "the run in the status", func() bool { return *status(t, a, "agent").Local.Active == 1 })
	h.send(jobproto.Abort{Type: jobproto.TypeAbort, Job: "ja", Reason: "user asked"})
	r := h.result("ja", 1)
	if r.Outcome != jobproto.OutcomeAborted || r.ExitCode != -1 || !strings.HasPrefix(r.Error, "aborted by the hub: user asked") {
		t.Fatalf("result %+v", r)
	}
	wait.For(t, "no run left", func() bool { return *status(t, a, "agent").Local.Active == 0 })
}

// TestJobResultSurvives: a result stays on disk until acked: it is sent
// again (files uploaded again) after the hub drops the connection, after
// the agent restarts on the same state directory, and after an ack with
// error; an ack clears it.
func TestJobResultSurvives(t *testing.T) {
	h := newFakeHub(t)
	h.autoAck = false
	cfg := jobTestConfig(t, h, act("make", time.Minute, "/bin/sh", "-c",
		`printf '{{"n": 1}}' > "$SWITCHBOARD_RESULT"; printf data > "$SWITCHBOARD_OUTPUT/f.dat"; echo made`))
	_, stop := startStoppable(t, cfg, jobOpts)
	h.run("jr", "make", nil, 0)
	first := h.result("jr", 1)
	if first.Outcome != jobproto.OutcomeSucceeded || len(first.Files) != 1 || string(first.Metrics) != `{"n":1}` {
		t.Fatalf("result %+v", first)
	}
	stored := filepath.Join(cfg.Agent.StateDir, "results", "jr.json")
	if _, err := os.Stat(stored); err != nil {
		t.Fatalf("result not on disk: %v", err)
	}

	h.run("jr", "make", nil, 0) // again, as a hub that did not see it start would: not run twice
	h.drop()                    // before any ack
	h.waitN(jobproto.TypeHello, "", 2)
	again := h.result("jr", 2)
	if again.Outcome != first.Outcome || !slices.Equal(again.Files, first.Files) || again.Stdout != "made\n" || !again.EndedAt.Equal(first.EndedAt) {
		t.Fatalf("re-sent result %+v, first %+v", again, first)
	}
	wait.For(t, "the file uploaded again", func() bool { return len(h.uploadsOf("jr/c1/f.dat")) == 2 })

	stop() // a new agent on the same state directory sends it again
	if _, err := os.Stat(stored); err != nil {
		t.Fatalf("result not on disk after the stop: %v", err)
	}
	cfg2 := jobTestConfig(t, h, act("make", time.Minute, "/bin/true"))
	cfg2.Agent.StateDir = cfg.Agent.StateDir
	a2, _ := startStoppable(t, cfg2, jobOpts)
	h.waitN(jobproto.TypeHello, "", 3)
	third := h.result("jr", 3)
	if third.Outcome != first.Outcome || !slices.Equal(third.Files, first.Files) || string(third.Metrics) != `{"n":1}` || !third.EndedAt.Equal(first.EndedAt) {
		t.Fatalf("result after the restart %+v, first %+v", third, first)
	}
	if p := status(t, a2, "agent").Local.ResultsPending; *p != 1 {
		t.Fatalf("results pending %d", *p)
	}

	h.send(jobproto.Ack{Type: jobproto.TypeAck, Job: "jr", Error: "file f.dat damaged"})
	h.result("jr", 4)
	wait.For(t, "the file uploaded a fourth time", func() bool { return len(h.uploadsOf("jr/c1/f.dat")) == 4 })
	for _, u := range h.uploadsOf("jr/c1/f.dat") {
		if string(u.body) != "data" || u.sha != sha("data") {
			t.Fatalf("upload %+v", u)
		}
	}
	h.send(jobproto.Ack{Type: jobproto.TypeAck, Job: "jr"})
	wait.For(t, "the state directory cleared", func() bool { return len(stateFiles(t, cfg.Agent.StateDir)) == 0 })
	if n := len(h.messages(jobproto.TypeStarted, "jr")); n != 1 {
		t.Fatalf("started %d times", n)
	}
	for _, raw := range h.messages(jobproto.TypeResult, "jr") {
		var r jobproto.Result
		json.Unmarshal(raw, &r)
		if r.Outcome != jobproto.OutcomeSucceeded {
			t.Fatalf("result %+v", r)
		}
	}
	wait.For(t, "no result pending", func() bool { return *status(t, a2, "agent").Local.ResultsPending == 0 })
}

// TestJobUploadRetriesAndGone: a failing upload is retried with backoff;
// a 404 (the job is gone) drops the result without sending it.
func TestJobUploadRetriesAndGone(t *testing.T) {
	h := newFakeHub(t)
	var mu sync.Mutex
	calls := map[string]int{}
	h.putStatus = func(job, name string) int {
		mu.Lock()
		defer mu.Unlock()
		calls[job]++
		switch {
		case job == "gone":
			return http.StatusNotFound
		case job == "flaky" && calls[job] < 3:
			return http.StatusServiceUnavailable
		case job == "bad":
			return http.StatusRequestEntityTooLarge
		}
		return 0
	}
	cfg := jobTestConfig(t, h, act("out", time.Minute, "/bin/sh", "-c", `printf abc > "$SWITCHBOARD_OUTPUT/a.txt"`))
	startStoppable(t, cfg, jobOpts)
	h.run("flaky", "out", nil, 0)
	if r := h.result("flaky", 1); len(r.Files) != 1 || r.Error != "" {
		t.Fatalf("flaky: %+v", r)
	}
	h.run("bad", "out", nil, 0)
	if r := h.result("bad", 1); len(r.Files) != 0 || !strings.Contains(r.Error, "a.txt not uploaded: the hub answered 413") {
		t.Fatalf("bad: %+v", r)
	}
	h.run("gone", "out", nil, 0)
	wait.For(t, "the gone job's upload", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls["gone"] > 0
	})
	wait.For(t, "the gone job's result dropped", func() bool { return len(stateFiles(t, cfg.Agent.StateDir)) == 0 })
	if n := len(h.messages(jobproto.TypeResult, "gone")); n != 0 {
		t.Fatalf("%d results sent for a job the hub does not know", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["flaky"] != 3 || calls["gone"] != 1 {
		t.Fatalf("upload calls %v", calls)
	}
}

// TestJobLogsDroppedWhileDown: output lines produced while the control
// channel is down are dropped and counted, never held; the process runs
// on and its result arrives once the channel is back.
func TestJobLogsDroppedWhileDown(t *testing.T) {
	h := newFakeHub(t)
	gate := filepath.Join(t.TempDir(), "gate")
	cfg := jobTestConfig(t, h, act("talk", time.Minute, "/bin/sh", "-c",
		`while [ ! -e `+gate+` ]; do echo waiting; /bin/sleep 0.01; done; echo end`))
	a, _ := startStoppable(t, cfg, jobOpts)
	h.run("jd", "talk", nil, 0)
	h.waitN(jobproto.TypeLog, "jd", 1)
	h.mu.Lock()
	h.closing = true
	h.mu.Unlock()
	h.drop()
	wait.For(t, "lines dropped", func() bool { return status(t, a, "agent").Drops > 5 })
	h.mu.Lock()
	h.closing = false
	h.mu.Unlock()
	var hello jobproto.Hello
	json.Unmarshal(h.waitN(jobproto.TypeHello, "", 2), &hello)
	if !slices.Equal(hello.Running, []string{"jd"}) {
		t.Fatalf("hello after the reconnect: running %q", hello.Running)
	}
	os.WriteFile(gate, nil, 0o600)
	r := h.result("jd", 1)
	if r.Outcome != jobproto.OutcomeSucceeded || !strings.HasSuffix(r.Stdout, "waiting\nend\n") {
		t.Fatalf("result %+v", r)
	}
}

// TestJobStopReportsInterruptedRun: a run still going when the agent stops
// is killed; its metrics so far and its output tail are kept as an
// interrupted result, which the next agent on the same state directory
// lists in its hello and sends.
func TestJobStopReportsInterruptedRun(t *testing.T) {
	h := newFakeHub(t)
	cfg := jobTestConfig(t, h, act("sleep", time.Hour, "/bin/sh", "-c",
		`echo '{{"bytes_read": 7}}' > "$SWITCHBOARD_RESULT"; /bin/sleep 60 & echo child=$!; wait`))
	_, stop := startStoppable(t, cfg, jobOpts)
	h.run("js", "sleep", nil, 0)
	var line []string
	wait.For(t, "the child's pid", func() bool {
		line = h.logLines("js", "stdout")
		return len(line) > 0
	})
	pid, err := strconv.Atoi(strings.TrimPrefix(line[0], "child="))
	if err != nil {
		t.Fatalf("stdout %q", line)
	}
	h.mu.Lock()
	h.autoAck = false // the stopping agent may still send it: the next one must too
	h.mu.Unlock()
	stop()
	wait.For(t, "the run's child gone", func() bool { return procGone(pid) })
	if got := stateFiles(t, cfg.Agent.StateDir); !slices.Equal(got, []string{"results/js.json"}) {
		t.Fatalf("state left: %q", got)
	}
	cfg2 := jobTestConfig(t, h, act("sleep", time.Hour, "/bin/true"))
	cfg2.Agent.StateDir = cfg.Agent.StateDir
	startStoppable(t, cfg2, jobOpts)
	var hello jobproto.Hello
	json.Unmarshal(h.waitN(jobproto.TypeHello, "", 2), &hello)
	if len(hello.Running) != 0 || !slices.Equal(hello.Results, []string{"js"}) || !hello.ReportsInterrupted {
		t.Fatalf("hello %+v", hello)
	}
	var r jobproto.Result
	wait.For(t, "the interrupted result sent by the new agent", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		seen := 0
		for _, m := range h.msgs {
			if m.typ == jobproto.TypeHello {
				seen++
			}
			if seen == 2 && m.typ == jobproto.TypeResult && m.job == "js" {
				json.Unmarshal(m.raw, &r)
				return true
			}
		}
		return false
	})
	if !r.Interrupted || r.Outcome != jobproto.OutcomeFailed || string(r.Metrics) != `{"bytes_read":7}` ||
		!strings.Contains(r.Stdout, "child=") || !strings.Contains(r.Error, "interrupted") {
		t.Fatalf("result %+v", r)
	}
}

// TestJobStateDirLocked: while an agent runs, a second one on its state
// directory is refused at New, naming the holder, before it reads the
// directory (it would take the running runs for interrupted ones and kill
// them); once the first has stopped it starts.
func TestJobStateDirLocked(t *testing.T) {
	h := newFakeHub(t)
	cfg := jobTestConfig(t, h, act("a", time.Minute, "/bin/true"))
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	opts := jobOpts
	opts.Backoff = fastBackoff
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.waitN(jobproto.TypeHello, "", 1)
	_, err = New(cfg, opts)
	if want := fmt.Sprintf("is in use by process %d", os.Getpid()); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second agent on a state directory in use: %v, want an error saying it %s", err, want)
	}
	cancel()
	var runErr error
	wait.For(t, "the first agent stopped", func() bool {
		select {
		case runErr = <-done:
			return true
		default:
			return false
		}
	})
	if runErr != nil {
		t.Fatal(runErr)
	}
	if _, err := New(cfg, opts); err != nil {
		t.Fatalf("agent on a state directory no longer in use: %v", err)
	}
}
