package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// The jobs scenario measures the two figures of the jobs issue
// (docs/jobs.md) against a hub with the jobs API:
//
//  1. A job over Agents simulated agents (SimAgent, real websockets on
//     loopback, all in this process) goes from RUN to COMPLETED with every
//     result stored. Each agent answers its run at once: started, one log
//     line, a result with a small metrics object and, with Files, one small
//     uploaded file. Timed from sending the POST that sets PHASE=RUN until a
//     blocking GET ?WAIT=… has returned COMPLETED and GET …/results/summary
//     has one data row per agent.
//  2. Waiters concurrent GET /api/v1/jobs/{id}?WAIT=… requests, each on its
//     own connection, are held on a PENDING job; the server's RSS is read
//     before and while they are held; then PHASE=ABORT is posted and, for
//     every request, the time from that POST's response to the request's
//     response is measured.

// Defaults of JobsOptions and the targets of the jobs issue.
const (
	DefaultJobsAgents     = 100
	DefaultJobsRuns       = 5
	DefaultJobsWaiters    = 1000
	DefaultJobsWaitSec    = 60
	DefaultJobsJobTimeout = time.Minute

	// JobsTargetJobSec bounds RUN → COMPLETED with every result stored.
	JobsTargetJobSec = 2.0
	// JobsTargetHeldRSSBytes bounds the server's RSS growth while the
	// waiters are held.
	JobsTargetHeldRSSBytes = 50 << 20
	// JobsTargetReleaseMS bounds the release of every waiter.
	JobsTargetReleaseMS = 100.0

	// jobsDialParallel is how many agents connect at once.
	jobsDialParallel = 32
	// jobsHeldTimeout bounds the wait for the waiters to be held, and for
	// the server to settle before they are opened.
	jobsHeldTimeout = time.Minute
	// jobsPollInterval and jobsStablePolls: the server's goroutine count is
	// polled this often and is stable when it has not changed for this many
	// polls in a row.
	jobsPollInterval = 20 * time.Millisecond
	jobsStablePolls  = 5
	// jobsAction is the action the simulated agents declare.
	jobsAction = "download"
	// jobsFile is the name of the file each agent uploads with Files.
	jobsFile = "report.csv"
	// jobsCleanupTimeout bounds deleting the bench's jobs at the end.
	jobsCleanupTimeout = 30 * time.Second
)

// JobsOptions configure Jobs.
type JobsOptions struct {
	// URL is the hub's base URL (loopback only); Secret signs the agent,
	// user (jobs:write) and stats (/metrics) tokens. Both required.
	URL    string
	Secret []byte
	// ServerPID, if positive, is read for RSS and CPU time (/proc).
	ServerPID int
	// Agents simulated agents (default 100) run Jobs jobs (default 5), one
	// after the other. With Files each agent also uploads one small file
	// per run.
	Agents int
	Jobs   int
	Files  bool
	// LogLines is how many output lines each run sends (default 1), as the
	// host agent sends them (SimAgent.SendLog: log chunks to a hub that
	// takes them): the hub stores each run's log as a result, so this
	// measures what a talkative action costs the job.
	LogLines int
	// Waiters blocking requests (default 1000) are held on a PENDING job,
	// each with WAIT=WaitSec (default 60; the server caps it).
	Waiters int
	WaitSec int
	// JobTimeout bounds each job, from its creation to the last ack
	// (default 1 min).
	JobTimeout time.Duration
	// Matrix, above 1, makes each job a matrix job whose SERVER has this
	// many values: Agents × Matrix runs, timed until the matrix result is
	// read and checked (jobsmatrix.go; target JobsTargetMatrixJobSec).
	Matrix int
}

// JobRun is one timed job.
type JobRun struct {
	ID string `json:"id"`
	// Sec: sending the PHASE=RUN POST → the summary with every row read.
	Sec float64 `json:"sec"`
	// PostSec is the RUN POST's own round trip (the hub dispatches in it);
	// CompletedSec the time until the blocking GET returned COMPLETED.
	PostSec      float64 `json:"post_sec"`
	CompletedSec float64 `json:"completed_sec"`
	SummaryRows  int     `json:"summary_rows"`
	Results      int     `json:"results"` // the summary and the files
	// ServerCPUSec is the server's CPU time over Sec (with a server pid).
	ServerCPUSec *float64 `json:"server_cpu_sec,omitempty"`
}

// MinMedMax summarises a few values.
type MinMedMax struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

func minMedMax(v []float64) MinMedMax {
	if len(v) == 0 {
		return MinMedMax{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return MinMedMax{Min: s[0], Median: med, Max: s[len(s)-1]}
}

// JobsResult is what Jobs measured.
type JobsResult struct {
	Scenario string `json:"scenario"` // "jobs"
	URL      string `json:"url"`

	// Part 1: jobs over simulated agents.
	Agents     int       `json:"agents"`
	Matrix     int       `json:"matrix,omitempty"` // values of each job's matrix parameter (0: plain jobs)
	Files      bool      `json:"files"`
	LogLines   int       `json:"log_lines"`
	ConnectSec float64   `json:"connect_sec"` // all agents welcomed
	Jobs       []JobRun  `json:"jobs"`
	JobSec     MinMedMax `json:"job_sec"`
	// JobTargetMet: the slowest job within JobsTargetJobSec.
	JobTargetMet bool `json:"job_target_met"`

	// Part 2: blocking WAIT requests on a PENDING job.
	Waiters int `json:"waiters"`
	WaitSec int `json:"wait_sec"`
	// HeldSec: opening the requests → the server's goroutine count risen
	// by at least Waiters and stable.
	HeldSec          float64 `json:"held_sec"`
	GoroutinesBefore int     `json:"goroutines_before"`
	GoroutinesHeld   int     `json:"goroutines_held"`
	// Server RSS (with a server pid): before the requests and while held.
	ServerRSSBefore int64   `json:"server_rss_before_bytes"`
	ServerRSSHeld   int64   `json:"server_rss_held_bytes"`
	ServerRSSDelta  int64   `json:"server_rss_delta_bytes"`
	RSSTargetMet    *bool   `json:"rss_target_met,omitempty"`
	ChangePostMS    float64 `json:"change_post_ms"` // the PHASE=ABORT POST's round trip
	// ReleaseMS: for every request, the time from the PHASE=ABORT POST's
	// response to the request's response (responses that came first count
	// as 0: EarlierThanPost). ReleaseFromSendMS counts from sending it.
	ReleaseMS         LatencyMS `json:"release_ms"`
	ReleaseFromSendMS LatencyMS `json:"release_from_send_ms"`
	EarlierThanPost   int       `json:"earlier_than_post"`
	// CPU time used from sending the POST until every request was
	// answered: by the server (with a server pid) and by this process.
	ReleaseServerCPUSec *float64 `json:"release_server_cpu_sec,omitempty"`
	ReleaseClientCPUSec float64  `json:"release_client_cpu_sec"`
	Released            int      `json:"released"` // answered with phase ABORTED
	ReleaseTargetMet    bool     `json:"release_target_met"`

	CleanupError string `json:"cleanup_error,omitempty"`
}

// Jobs runs the jobs scenario (see the top of this file). It returns an
// error when the scenario could not run or the hub misbehaved (a job not
// COMPLETED, a missing summary row or ack, a WAIT request answered before
// the change or with the wrong phase); missed targets are only reported.
func Jobs(ctx context.Context, o JobsOptions) (JobsResult, error) {
	if o.LogLines <= 0 {
		o.LogLines = 1
	}
	if o.Agents <= 0 {
		o.Agents = DefaultJobsAgents
	}
	if o.Jobs <= 0 {
		o.Jobs = DefaultJobsRuns
	}
	if o.Waiters <= 0 {
		o.Waiters = DefaultJobsWaiters
	}
	if o.WaitSec <= 0 {
		o.WaitSec = DefaultJobsWaitSec
	}
	if o.JobTimeout <= 0 {
		o.JobTimeout = DefaultJobsJobTimeout
	}
	res := JobsResult{Scenario: "jobs", URL: o.URL, Agents: o.Agents, Matrix: o.Matrix, Files: o.Files, LogLines: o.LogLines, Waiters: o.Waiters, WaitSec: o.WaitSec}
	if err := CheckLoopbackURL(o.URL); err != nil {
		return res, err
	}
	if len(o.Secret) == 0 {
		return res, errors.New("bench: the hub's secret is needed to mint agent, user and stats tokens")
	}
	// Each agent holds a websocket and an upload connection; each waiter a
	// connection; the server as many again.
	var lim syscall.Rlimit
	if need := uint64(2*o.Agents + o.Waiters + 256); syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && need > lim.Cur {
		return res, fmt.Errorf("bench: %d agents and %d waiters need about %d file descriptors here and in the server, but RLIMIT_NOFILE is %d", o.Agents, o.Waiters, need, lim.Cur)
	}

	b := &jobsBench{o: o, base: strings.TrimSuffix(o.URL, "/")}
	// A label of this run only: the jobs target exactly its agents, even on
	// a hub that has seen agents of earlier runs.
	b.label = "bench=jobs-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	ttl := time.Hour + time.Duration(o.Jobs)*o.JobTimeout + time.Duration(o.WaitSec)*time.Second
	var err error
	if b.user, err = mintToken(o.Secret, o.URL, ttl, func(c *auth.Claims) { c.Scopes = []string{auth.ScopeJobsWrite} }); err != nil {
		return res, err
	}
	if b.stats, err = mintToken(o.Secret, o.URL, ttl, func(c *auth.Claims) { c.Scopes = []string{auth.ScopeStats} }); err != nil {
		return res, err
	}
	b.agentToken = func(id string) (string, error) {
		return mintToken(o.Secret, o.URL, ttl, func(c *auth.Claims) {
			c.Topic, c.Prefix, c.Scopes, c.Agent, c.Labels = id, wire.PrefixAgent, []string{auth.ScopeAgent}, id, []string{b.label}
			c.Subject = "agent-" + id
		})
	}
	b.hc = &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer b.hc.CloseIdleConnections()
	defer func() {
		if err := b.cleanup(); err != nil {
			res.CleanupError = err.Error()
		}
	}()
	if _, err := metricValue(ctx, b.hc, o.URL, b.stats, "go_goroutines"); err != nil {
		return res, fmt.Errorf("bench: jobs: read /metrics: %w", err)
	}

	if err := b.runJobs(ctx, &res); err != nil {
		return res, err
	}
	if err := b.runWaiters(ctx, &res); err != nil {
		return res, err
	}
	return res, nil
}

// jobsBench is one run of the scenario.
type jobsBench struct {
	o          JobsOptions
	base       string
	label      string
	user       string // jobs:write, sub switchboard-bench
	stats      string // relay:stats
	agentToken func(id string) (string, error)
	hc         *http.Client // API requests; does not follow redirects
	created    []string     // job ids, deleted at the end
}

// jobsAgentID names agent i.
func jobsAgentID(i int) string { return fmt.Sprintf("bench-jobs-%03d", i) }

// jobsMetric is the bytes_read agent i reports.
func jobsMetric(i int) int64 { return 1_000_000 + int64(i) }

// jobsActionDecl is the action the simulated agents offer.
func jobsActionDecl() jobproto.Action {
	return jobproto.Action{Name: jobsAction, Timeout: jobproto.Duration(time.Minute), Params: []jobproto.Param{
		{Name: "server", Type: jobproto.ParamString, Required: true, Pattern: "[a-z0-9.-]+"},
	}}
}

// agentEvent is an agent's ack of a job, or its failure to answer a run.
type agentEvent struct {
	job string
	err error
}

// runJobs connects the agents, runs the jobs one after the other and
// disconnects the agents.
func (b *jobsBench) runJobs(ctx context.Context, res *JobsResult) error {
	o := b.o
	// Uploads and the agents' access requests: one keep-alive connection
	// per agent.
	agentHC := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Agents, IdleConnTimeout: time.Minute}}
	defer agentHC.CloseIdleConnections()

	actx, cancelAgents := context.WithCancel(ctx)
	defer cancelAgents()
	agents := make([]*SimAgent, o.Agents)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer func() {
		close(stop)
		// Close in parallel: each waits for the close handshake.
		var cwg sync.WaitGroup
		for _, a := range agents {
			if a != nil {
				cwg.Go(func() { _ = a.Close() })
			}
		}
		cwg.Wait()
		cancelAgents()
		wg.Wait()
	}()

	start := time.Now()
	err := parallel(ctx, o.Agents, jobsDialParallel, func(i int) error {
		id := jobsAgentID(i)
		tok, err := b.agentToken(id)
		if err != nil {
			return err
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		a, err := DialAgent(dctx, b.base, tok, jobproto.Hello{Agent: id, Labels: []string{b.label},
			Actions: []jobproto.Action{jobsActionDecl()}, Version: "bench"}, agentHC)
		if err != nil {
			return fmt.Errorf("agent %s: %w", id, err)
		}
		agents[i] = a
		return nil
	})
	if err != nil {
		return fmt.Errorf("bench: connect agents: %w", err)
	}
	res.ConnectSec = time.Since(start).Seconds()

	events := make(chan agentEvent, o.Agents)
	for i, a := range agents {
		wg.Go(func() { b.serveAgent(actx, a, i, events, stop) })
	}
	var secs []float64
	for k := range o.Jobs {
		run := b.runJob
		if o.Matrix > 1 {
			run = b.runMatrixJob
		}
		jr, err := run(ctx, k, events)
		if err != nil {
			return err
		}
		res.Jobs = append(res.Jobs, jr)
		secs = append(secs, jr.Sec)
	}
	res.JobSec = minMedMax(secs)
	res.JobTargetMet = res.JobSec.Max <= res.jobTargetSec()
	return nil
}

// serveAgent plays agent i: it answers every run at once and reports
// every ack (and every run it failed to answer) on events.
func (b *jobsBench) serveAgent(ctx context.Context, a *SimAgent, i int, events chan<- agentEvent, stop <-chan struct{}) {
	report := func(ev agentEvent) {
		select {
		case events <- ev:
		case <-stop:
		}
	}
	for {
		m, err := a.Next(ctx)
		if err != nil {
			return // closed at the end
		}
		switch v := m.(type) {
		case *jobproto.Run:
			if err := b.answer(ctx, a, i, v); err != nil {
				report(agentEvent{job: v.Job, err: fmt.Errorf("agent %s: %w", a.ID, err)})
			}
		case *jobproto.Ack:
			ev := agentEvent{job: v.Job}
			if v.Error != "" {
				ev.err = fmt.Errorf("agent %s: the hub did not take the result: %s", a.ID, v.Error)
			}
			report(ev)
		}
	}
}

// answer runs a run the way a fast action would: started, one log line,
// the file if asked, the result.
func (b *jobsBench) answer(ctx context.Context, a *SimAgent, i int, r *jobproto.Run) error {
	started := time.Now()
	if err := a.Send(ctx, jobproto.Started{Type: jobproto.TypeStarted, Job: r.Job, StartedAt: started}); err != nil {
		return err
	}
	// The output is sent as the agent sends it, a chunk at a time as it
	// fills (SendLog). Its lines are made with appends, not fmt (which was
	// half of the bench's own CPU with 10,000 lines per run): writing them
	// is the simulated action's work, not the system's.
	var out []byte
	head := "fetching 1 file from " + r.Params["server"] + ": line "
	of := " of " + strconv.Itoa(b.o.LogLines) + ", as a talkative download prints its progress\n"
	for n := range b.o.LogLines {
		out = append(strconv.AppendInt(append(out, head...), int64(n+1), 10), of...)
		if len(out) >= jobproto.MaxLogChunkBytes-jobproto.MaxLogLineBytes || n == b.o.LogLines-1 {
			if err := a.SendLog(ctx, r.Job, jobproto.StreamStdout, out); err != nil {
				return err
			}
			out = out[:0]
		}
	}
	res := jobproto.Result{Type: jobproto.TypeResult, Job: r.Job, Outcome: jobproto.OutcomeSucceeded,
		StartedAt: started, Metrics: fmt.Appendf(nil, `{"bytes_read":{"server-a":%d}}`, jobsMetric(i))}
	if b.o.Files {
		data := fmt.Appendf(nil, "agent,bytes_read\n%s,%d\n", a.ID, jobsMetric(i))
		status, err := a.Upload(ctx, r.Job, jobsFile, data)
		if err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		if status != http.StatusCreated {
			return fmt.Errorf("upload: HTTP %d", status)
		}
		res.Files = []jobproto.File{FileOf(jobsFile, data)}
	}
	res.EndedAt = time.Now()
	return a.Send(ctx, res)
}

// jobDocument is the part of a job's JSON representation the bench reads.
type jobDocument struct {
	Phase        string `json:"phase"`
	ErrorSummary *struct {
		Message string `json:"message"`
	} `json:"errorSummary"`
	Results []struct {
		ID string `json:"id"`
	} `json:"results"`
}

// activeJobPhase reports whether a blocking GET keeps waiting in phase p.
func activeJobPhase(p string) bool {
	switch p {
	case "PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED":
		return true
	}
	return false
}

// runJob creates job number k, times it from RUN to the summary and waits
// for every agent's ack.
func (b *jobsBench) runJob(ctx context.Context, k int, events <-chan agentEvent) (JobRun, error) {
	var jr JobRun
	ctx, cancel := context.WithTimeout(ctx, b.o.JobTimeout)
	defer cancel()
	id, err := b.createJob(ctx, fmt.Sprintf("bench-jobs-%d", k))
	if err != nil {
		return jr, err
	}
	jr.ID = id
	serverCPU := startCPUSpan(b.o.ServerPID)

	doc, t0, err := b.runToEnd(ctx, id, "job", &jr)
	if err != nil {
		return jr, err
	}
	rows, err := b.summary(ctx, id)
	if err != nil {
		return jr, err
	}
	jr.Sec = time.Since(t0).Seconds()
	jr.ServerCPUSec = serverCPU.seconds()
	// Each run's stored log, logs/{agent}.txt, is counted apart: every
	// bench agent prints a line, so there is one per agent (none from a
	// server run with --job-max-log 0).
	logs := 0
	for _, r := range doc.Results {
		if strings.HasPrefix(r.ID, "logs/") {
			logs++
		}
	}
	jr.SummaryRows, jr.Results = rows, len(doc.Results)-logs
	want := 1
	if b.o.Files {
		want += b.o.Agents
	}
	if jr.Results != want || logs != 0 && logs != b.o.Agents {
		return jr, fmt.Errorf("bench: job %s: %d results and %d logs, want %d and %d", id, jr.Results, logs, want, b.o.Agents)
	}

	// Every agent's ack, before the next job.
	for n := 0; n < b.o.Agents; n++ {
		select {
		case ev := <-events:
			if ev.err != nil {
				return jr, fmt.Errorf("bench: job %s: %w", id, ev.err)
			}
			if ev.job != id {
				return jr, fmt.Errorf("bench: job %s: an agent acked job %s", id, ev.job)
			}
		case <-ctx.Done():
			return jr, fmt.Errorf("bench: job %s: %d of %d agents acked: %w", id, n, b.o.Agents, ctx.Err())
		}
	}
	return jr, nil
}

// runToEnd starts the job id (PHASE=RUN) and waits for it to end. It sets
// jr.PostSec and jr.CompletedSec, counted from the returned start, and
// fails unless the job COMPLETED; kind names the job in errors ("job",
// "matrix job").
func (b *jobsBench) runToEnd(ctx context.Context, id, kind string, jr *JobRun) (jobDocument, time.Time, error) {
	t0 := time.Now()
	if status, body, err := b.do(ctx, http.MethodPost, "/api/v1/jobs/"+id+"/phase", url.Values{"PHASE": {"RUN"}}); err != nil {
		return jobDocument{}, t0, err
	} else if status != http.StatusSeeOther {
		return jobDocument{}, t0, fmt.Errorf("bench: %s %s: PHASE=RUN: HTTP %d: %s", kind, id, status, bytes.TrimSpace(body))
	}
	jr.PostSec = time.Since(t0).Seconds()
	var (
		doc jobDocument
		err error
	)
	for doc.Phase == "" || activeJobPhase(doc.Phase) {
		if doc, err = b.job(ctx, id, "?WAIT="+strconv.Itoa(b.o.WaitSec)); err != nil {
			return jobDocument{}, t0, err
		}
	}
	jr.CompletedSec = time.Since(t0).Seconds()
	if doc.Phase != "COMPLETED" {
		why := ""
		if doc.ErrorSummary != nil {
			why = ": " + doc.ErrorSummary.Message
		}
		return doc, t0, fmt.Errorf("bench: %s %s ended in phase %s%s", kind, id, doc.Phase, why)
	}
	return doc, t0, nil
}

// summary reads a job's summary result and checks it has one row per
// agent with the metric that agent sent; it returns the data rows.
func (b *jobsBench) summary(ctx context.Context, id string) (int, error) {
	status, body, err := b.do(ctx, http.MethodGet, "/api/v1/jobs/"+id+"/results/summary", nil)
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("bench: job %s: summary: HTTP %d: %s", id, status, bytes.TrimSpace(body))
	}
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil || len(rows) == 0 || !slices.Equal(rows[0], []string{"agent", "state", "exit_code", "metric", "value"}) {
		return 0, fmt.Errorf("bench: job %s: summary is not the expected CSV (%v): %.200q", id, err, body)
	}
	rows = rows[1:]
	if len(rows) != b.o.Agents {
		return len(rows), fmt.Errorf("bench: job %s: summary has %d rows, want %d", id, len(rows), b.o.Agents)
	}
	seen := make([]bool, b.o.Agents)
	for _, r := range rows {
		var i int
		if _, err := fmt.Sscanf(r[0], "bench-jobs-%d", &i); err != nil || i < 0 || i >= b.o.Agents || seen[i] || r[0] != jobsAgentID(i) {
			return len(rows), fmt.Errorf("bench: job %s: unexpected or repeated summary row %q", id, r)
		}
		seen[i] = true
		if r[1] != "succeeded" || r[2] != "0" || r[3] != "bytes_read.server-a" || r[4] != strconv.FormatInt(jobsMetric(i), 10) {
			return len(rows), fmt.Errorf("bench: job %s: summary row %q, want %s,succeeded,0,bytes_read.server-a,%d", id, r, r[0], jobsMetric(i))
		}
	}
	return len(rows), nil
}

// runWaiters holds the blocking requests on a PENDING job, reads the
// server's memory, aborts the job and times every request's release.
func (b *jobsBench) runWaiters(ctx context.Context, res *JobsResult) error {
	o := b.o
	id, err := b.createJob(ctx, "bench-jobs-waiters")
	if err != nil {
		return err
	}
	// The agents have just gone: let the server settle first.
	before, err := b.stableGoroutines(ctx, 0, nil)
	if err != nil {
		return err
	}
	res.GoroutinesBefore = before
	if o.ServerPID > 0 {
		if res.ServerRSSBefore, err = ProcRSS(o.ServerPID); err != nil {
			return err
		}
	}

	// Each request on its own connection: concurrent requests never share
	// one, and none is kept afterwards.
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	wc := &http.Client{Transport: tr}
	wctx, cancel := context.WithTimeout(ctx, time.Duration(o.WaitSec)*time.Second+jobsHeldTimeout)
	defer cancel()
	type waiter struct {
		at    time.Time
		phase string
		err   error
	}
	ws := make([]waiter, o.Waiters)
	var answered atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // on an early return: release the requests first
	target := b.base + "/api/v1/jobs/" + id + "?WAIT=" + strconv.Itoa(o.WaitSec)
	start := time.Now()
	for i := range ws {
		wg.Go(func() {
			w := &ws[i]
			defer answered.Add(1)
			req, err := http.NewRequestWithContext(wctx, http.MethodGet, target, nil)
			if err != nil {
				w.err = err
				return
			}
			req.Header.Set("Authorization", "Bearer "+b.user)
			req.Header.Set("Accept", "application/json")
			resp, err := wc.Do(req)
			w.at = time.Now()
			if err != nil {
				w.err = err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				w.err = err
				return
			}
			if resp.StatusCode != http.StatusOK {
				w.err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
				return
			}
			var d jobDocument
			if err := json.Unmarshal(body, &d); err != nil {
				w.err = err
				return
			}
			w.phase = d.Phase
		})
	}
	held, err := b.stableGoroutines(ctx, before+o.Waiters, &answered)
	if err != nil {
		cancel()
		wg.Wait()
		for i := range ws {
			if w := &ws[i]; w.err != nil && !errors.Is(w.err, context.Canceled) {
				err = fmt.Errorf("%w; request %d: %v", err, i, w.err)
				break
			} else if w.err == nil {
				err = fmt.Errorf("%w; request %d answered with phase %s", err, i, w.phase)
				break
			}
		}
		return fmt.Errorf("bench: %d WAIT requests not held: %w", o.Waiters, err)
	}
	res.HeldSec = time.Since(start).Seconds()
	res.GoroutinesHeld = held
	if o.ServerPID > 0 {
		if res.ServerRSSHeld, err = ProcRSS(o.ServerPID); err != nil {
			return err
		}
		res.ServerRSSDelta = res.ServerRSSHeld - res.ServerRSSBefore
		met := res.ServerRSSDelta <= JobsTargetHeldRSSBytes
		res.RSSTargetMet = &met
	}

	selfPID := os.Getpid()
	clientCPU0, _ := ProcCPU(selfPID)
	var serverCPU0 time.Duration
	serverCPUErr := errors.New("no server pid")
	if o.ServerPID > 0 {
		serverCPU0, serverCPUErr = ProcCPU(o.ServerPID)
	}
	sent := time.Now()
	status, body, err := b.do(ctx, http.MethodPost, "/api/v1/jobs/"+id+"/phase", url.Values{"PHASE": {"ABORT"}})
	answeredAt := time.Now()
	if err != nil {
		return err
	}
	if status != http.StatusSeeOther {
		return fmt.Errorf("bench: job %s: PHASE=ABORT: HTTP %d: %s", id, status, bytes.TrimSpace(body))
	}
	res.ChangePostMS = float64(answeredAt.Sub(sent)) / 1e6
	wg.Wait()
	clientCPU1, _ := ProcCPU(selfPID)
	res.ReleaseClientCPUSec = (clientCPU1 - clientCPU0).Seconds()
	if serverCPUErr == nil {
		if cpu1, err := ProcCPU(o.ServerPID); err == nil {
			v := (cpu1 - serverCPU0).Seconds()
			res.ReleaseServerCPUSec = &v
		}
	}

	var fromResp, fromSend Histogram
	for i := range ws {
		w := &ws[i]
		if w.err != nil {
			return fmt.Errorf("bench: WAIT request %d: %w", i, w.err)
		}
		if w.phase != "ABORTED" {
			return fmt.Errorf("bench: WAIT request %d answered with phase %q, want ABORTED", i, w.phase)
		}
		res.Released++
		d := w.at.Sub(answeredAt)
		if d < 0 {
			res.EarlierThanPost++
			d = 0
		}
		fromResp.Record(int64(d))
		fromSend.Record(int64(max(w.at.Sub(sent), 0)))
	}
	res.ReleaseMS, res.ReleaseFromSendMS = latencyMS(&fromResp), latencyMS(&fromSend)
	res.ReleaseTargetMet = res.ReleaseMS.Max <= JobsTargetReleaseMS
	return nil
}

// stableGoroutines polls the server's goroutine count until it is at
// least min and has not changed for jobsStablePolls polls, and returns it.
// If answered is set, any request answered meanwhile is an error: it was
// not held.
func (b *jobsBench) stableGoroutines(ctx context.Context, min int, answered *atomic.Int64) (int, error) {
	deadline := time.NewTimer(jobsHeldTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(jobsPollInterval)
	defer tick.Stop()
	last, same := -1, 0
	for {
		g, err := metricValue(ctx, b.hc, b.base, b.stats, "go_goroutines")
		if err != nil {
			return 0, fmt.Errorf("read /metrics: %w", err)
		}
		if answered != nil && answered.Load() > 0 {
			return 0, fmt.Errorf("%d answered before the phase changed (with %d server goroutines)", answered.Load(), g)
		}
		if g == last {
			same++
		} else {
			last, same = g, 0
		}
		if g >= min && same >= jobsStablePolls {
			return g, nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return 0, fmt.Errorf("the server's goroutines (%d, want at least %d) did not settle within %v", g, min, jobsHeldTimeout)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// do sends an API request as the bench's user; form, if not nil, is the
// form-encoded body.
func (b *jobsBench) do(ctx context.Context, method, path string, form url.Values) (int, []byte, error) {
	status, body, _, err := b.doH(ctx, method, path, form)
	return status, body, err
}

// doH is do that also returns the response's headers.
func (b *jobsBench) doH(ctx context.Context, method, path string, form url.Values) (int, []byte, http.Header, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.user)
	req.Header.Set("Accept", "application/json") // the jobs API answers UWS XML by default
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("bench: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b2, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("bench: %s %s: %w", method, path, err)
	}
	return resp.StatusCode, b2, resp.Header, nil
}

// createJob creates a PENDING job of the action on this run's agents.
func (b *jobsBench) createJob(ctx context.Context, runID string) (string, error) {
	status, body, h, err := b.doH(ctx, http.MethodPost, "/api/v1/jobs", url.Values{
		"ACTION": {jobsAction}, "TARGETS": {b.label}, "SERVER": {"data-a.example.org"}, "RUNID": {runID}})
	if err != nil {
		return "", err
	}
	if status != http.StatusSeeOther {
		return "", fmt.Errorf("bench: create job: HTTP %d: %s", status, bytes.TrimSpace(body))
	}
	// Location is <public URL>/api/v1/jobs/<id>.
	loc := h.Get("Location")
	_, id, ok := strings.Cut(loc, "/api/v1/jobs/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", fmt.Errorf("bench: create job: Location %q", loc)
	}
	b.created = append(b.created, id)
	return id, nil
}

// job reads a job's representation; query may hold WAIT.
func (b *jobsBench) job(ctx context.Context, id, query string) (jobDocument, error) {
	var d jobDocument
	status, body, err := b.do(ctx, http.MethodGet, "/api/v1/jobs/"+id+query, nil)
	if err != nil {
		return d, err
	}
	if status != http.StatusOK {
		return d, fmt.Errorf("bench: GET job %s: HTTP %d: %s", id, status, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return d, fmt.Errorf("bench: job %s: %w", id, err)
	}
	return d, nil
}

// cleanup deletes the jobs the bench created, with their files.
func (b *jobsBench) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), jobsCleanupTimeout)
	defer cancel()
	var errs []error
	for _, id := range b.created {
		status, body, err := b.do(ctx, http.MethodDelete, "/api/v1/jobs/"+id, nil)
		if err == nil && status != http.StatusSeeOther {
			err = fmt.Errorf("delete job %s: HTTP %d: %s", id, status, bytes.TrimSpace(body))
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// WriteTable writes r as a human-readable table.
func (r *JobsResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	files := ""
	if r.Files {
		files = " and one uploaded file"
	}
	row("scenario", "jobs: %d simulated agents × %d jobs; %d blocking WAIT=%d requests on a PENDING job", r.Agents, len(r.Jobs), r.Waiters, r.WaitSec)
	row("hub", "%s", r.URL)
	row("agents", "%d connected and welcomed in %.2f s; each run: started, %d log lines, result with metrics%s", r.Agents, r.ConnectSec, r.LogLines, files)
	if r.Matrix > 1 {
		row("matrix", "each job a matrix job of %d SERVER values: %d runs, timed until matrix.csv is read and checked", r.Matrix, r.Agents*r.Matrix)
	}
	row("RUN → COMPLETED", "min %.3f s  median %.3f s  max %.3f s (target ≤ %g s: %s)", r.JobSec.Min, r.JobSec.Median, r.JobSec.Max, r.jobTargetSec(), met(r.JobTargetMet))
	for i, j := range r.Jobs {
		cpu := ""
		if j.ServerCPUSec != nil {
			cpu = fmt.Sprintf(", server CPU %.2f s", *j.ServerCPUSec)
		}
		row(fmt.Sprintf("  job %d", i+1), "%.3f s: RUN POST %.3f s, COMPLETED at %.3f s, summary %d rows, %d results%s",
			j.Sec, j.PostSec, j.CompletedSec, j.SummaryRows, j.Results, cpu)
	}
	row("waiters", "%d held after %.2f s; server goroutines %d → %d (%.2f per request)", r.Waiters, r.HeldSec,
		r.GoroutinesBefore, r.GoroutinesHeld, float64(r.GoroutinesHeld-r.GoroutinesBefore)/float64(max(r.Waiters, 1)))
	if r.RSSTargetMet != nil {
		row("server RSS", "%.1f MiB before, %.1f MiB held: %+.1f MiB, %.1f KiB per request (target ≤ %d MiB: %s)",
			float64(r.ServerRSSBefore)/(1<<20), float64(r.ServerRSSHeld)/(1<<20), float64(r.ServerRSSDelta)/(1<<20),
			float64(r.ServerRSSDelta)/1024/float64(max(r.Waiters, 1)), JobsTargetHeldRSSBytes>>20, met(*r.RSSTargetMet))
	} else {
		row("server RSS", "not read (no server pid)")
	}
	row("PHASE=ABORT", "POST answered in %.1f ms; %d of %d requests released with ABORTED", r.ChangePostMS, r.Released, r.Waiters)
	l := r.ReleaseMS
	row("release ms", "p50 %.1f  p90 %.1f  p99 %.1f  max %.1f from the POST's response (target ≤ %g ms: %s)",
		l.P50, l.P90, l.P99, l.Max, JobsTargetReleaseMS, met(r.ReleaseTargetMet))
	s := r.ReleaseFromSendMS
	row("", "p50 %.1f  p99 %.1f  max %.1f from sending it; %d answered before the POST", s.P50, s.P99, s.Max, r.EarlierThanPost)
	cpu := "server not read"
	if r.ReleaseServerCPUSec != nil {
		cpu = fmt.Sprintf("server %.2f s", *r.ReleaseServerCPUSec)
	}
	row("release CPU", "%s, bench %.2f s (CPU time from the POST until the last answer; 10 ms ticks)", cpu, r.ReleaseClientCPUSec)
	if r.CleanupError != "" {
		row("cleanup", "%s", r.CleanupError)
	}
	return tw.Flush()
}
