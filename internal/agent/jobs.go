package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// jobAgent is the agent side of jobs (docs/jobs.md): the control channel
// to the hub (prefix agent, topic = the agent id), the runs of declared
// actions, and the results kept in the state directory until the hub
// acknowledges them.
type jobAgent struct {
	a       *Agent
	cfg     *AgentConfig
	link    *link
	st      *linkStats
	log     *slog.Logger
	slot    *relaySlot // the control channel, set once welcomed
	actions map[string]*action
	store   *resultStore // nil without a state directory (no actions)
	version string

	killGrace time.Duration // SIGTERM → SIGKILL
	logFlush  time.Duration // how often log lines are sent
	guard     string        // Options.ActionGuard

	kick chan struct{} // wakes the result sender

	logChunks atomic.Bool // the hub of the last welcome takes log chunks (Welcome.LogChunks)

	mu           sync.Mutex // guards the fields below
	running      map[string]*jobRun
	pending      map[string]*pendingResult
	maxFileBytes int64 // from the last welcome; 0: no limit
	maxRunBytes  int64

	runs sync.WaitGroup
}

// action is a declared action, ready to run.
type action struct {
	cfg  *ActionConfig
	args [][]argPart // Command[1:], parsed
}

// pendingResult is a finished run's result not yet acknowledged.
type pendingResult struct {
	res     *storedResult
	sentOn  *client.Conn // the connection it was sent on, awaiting ack
	retryAt time.Time    // not before: after a failed upload or an ack with error
	bo      backoff
}

// logFlushInterval is how often a run's output lines are sent at most.
const logFlushInterval = 100 * time.Millisecond

func newJobAgent(a *Agent, cfg *AgentConfig, opts Options) (*jobAgent, error) {
	j := &jobAgent{
		a: a, cfg: cfg, slot: newRelaySlot(), actions: map[string]*action{},
		version: opts.Version, killGrace: opts.killGrace, logFlush: opts.logFlush, guard: opts.ActionGuard,
		kick: make(chan struct{}, 1), running: map[string]*jobRun{}, pending: map[string]*pendingResult{},
	}
	if j.killGrace <= 0 {
		j.killGrace = stopGrace
	}
	if j.logFlush <= 0 {
		j.logFlush = logFlushInterval
	}
	j.link = a.newLink("agent", "agent", "agent", AgentPrefix, cfg.ID, cfg.TokenFile, "runs")
	j.link.readLimit = jobproto.MaxMessageBytes
	j.st, j.log = j.link.st, j.link.log
	for i := range cfg.Actions {
		ac := &cfg.Actions[i]
		if len(ac.Command) == 0 {
			return nil, fmt.Errorf("agent: action %q has no command", ac.Name)
		}
		act := &action{cfg: ac}
		for _, arg := range ac.Command[1:] {
			parts, err := parseArg(arg)
			if err != nil {
				return nil, fmt.Errorf("agent: action %q: %v", ac.Name, err)
			}
			act.args = append(act.args, parts)
		}
		j.actions[ac.Name] = act
	}
	if cfg.StateDir != "" {
		dir, err := filepath.Abs(cfg.StateDir)
		if err != nil {
			return nil, fmt.Errorf("agent: state_dir: %w", err)
		}
		j.store = &resultStore{dir: dir, log: j.log}
		results, err := j.store.open()
		if err != nil {
			return nil, fmt.Errorf("agent: state_dir: %w", err)
		}
		for _, r := range results {
			j.pending[r.Job] = &pendingResult{res: r, bo: backoff{p: a.backoff}}
		}
		j.st.resultsPending.Store(int64(len(j.pending)))
		if len(results) > 0 {
			j.log.Info("results not yet acknowledged found; they are sent once connected", "results", len(results))
		}
	} else if len(cfg.Actions) > 0 {
		return nil, errors.New("agent: actions need a state_dir")
	}
	return j, nil
}

// run keeps the control channel up until ctx ends, then waits for the runs
// (which ctx's end kills).
func (j *jobAgent) run(ctx context.Context) {
	j.link.run(ctx, j.serve)
	j.runs.Wait()
}

// serve speaks the control protocol on one connection: hello, welcome,
// then runs, aborts and acks until the connection fails.
func (j *jobAgent) serve(ctx context.Context, c *client.Conn) error {
	running, results := j.heldJobs()
	hello := jobproto.Hello{Type: jobproto.TypeHello, Agent: j.cfg.ID, Labels: j.cfg.Labels, Version: j.version,
		Running: running, Results: results, ReportsInterrupted: true}
	for _, ac := range j.cfg.Actions {
		hello.Actions = append(hello.Actions, ac.Action)
	}
	b, err := json.Marshal(hello)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	err = c.Write(wctx, client.Text, b)
	cancel()
	if err != nil {
		return err
	}
	j.st.sent(len(b))

	rctx, cancel := context.WithTimeout(ctx, connectTimeout)
	w, err := j.awaitWelcome(rctx, c)
	cancel()
	if err != nil {
		return err
	}
	j.setLimits(w)
	j.log.Info("agent registered", "node", w.Node, "max_file_bytes", w.MaxFileBytes, "max_run_bytes", w.MaxRunBytes,
		"running", len(hello.Running), "results_pending", j.st.resultsPending.Load())

	j.slot.set(c)
	defer j.slot.clear(c)
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { j.sendLoop(sctx, c) })
	defer func() {
		stop()
		wg.Wait()
	}()
	j.wake()
	return readRelay(ctx, c, j.st, func(typ client.MessageType, data []byte) {
		if typ == client.Text {
			j.handle(ctx, data)
		}
	})
}

// awaitWelcome reads until the hub's welcome; other messages before it are
// ignored.
func (j *jobAgent) awaitWelcome(ctx context.Context, c *client.Conn) (jobproto.Welcome, error) {
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return jobproto.Welcome{}, fmt.Errorf("no welcome from the hub within %v", connectTimeout)
			}
			return jobproto.Welcome{}, err
		}
		j.st.received(len(data))
		var env jobproto.Envelope
		if typ != client.Text || json.Unmarshal(data, &env) != nil || env.Type != jobproto.TypeWelcome {
			j.log.Debug("message before welcome ignored", "bytes", len(data))
			continue
		}
		var w jobproto.Welcome
		if err := json.Unmarshal(data, &w); err != nil {
			return w, fmt.Errorf("welcome: %w", err)
		}
		return w, nil
	}
}

func (j *jobAgent) setLimits(w jobproto.Welcome) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.maxFileBytes, j.maxRunBytes = max(w.MaxFileBytes, 0), max(w.MaxRunBytes, 0)
	j.logChunks.Store(w.LogChunks)
}

// takesLogChunks reports whether the hub of the last welcome takes log
// chunks.
func (j *jobAgent) takesLogChunks() bool { return j.logChunks.Load() }

func (j *jobAgent) limits() (file, run int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.maxFileBytes, j.maxRunBytes
}

// heldJobs returns the jobs running here and those whose results wait for
// the hub's ack, at one instant: together every run this agent knows of.
func (j *jobAgent) heldJobs() (running, results []string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Sorted(maps.Keys(j.running)), slices.Sorted(maps.Keys(j.pending))
}

// handle acts on one message from the hub. It never blocks for long: runs
// start in their own goroutines.
func (j *jobAgent) handle(ctx context.Context, data []byte) {
	var env jobproto.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		j.log.Warn("control message is not JSON; ignored", "bytes", len(data))
		return
	}
	switch env.Type {
	case jobproto.TypeRun:
		var m jobproto.Run
		if err := json.Unmarshal(data, &m); err != nil {
			var id struct {
				Job string `json:"job"`
			}
			switch {
			case json.Unmarshal(data, &id) != nil || id.Job == "":
				j.log.Warn("run message without a job; ignored", "error", err)
			case j.has(id.Job):
				j.log.Warn("malformed run message for a job this agent has; ignored", "job", id.Job, "error", err)
			default:
				j.reject(id.Job, "malformed run message: "+err.Error(), false)
			}
			return
		}
		j.startRun(ctx, m)
	case jobproto.TypeAbort:
		var m jobproto.Abort
		if json.Unmarshal(data, &m) == nil {
			j.abort(m)
		}
	case jobproto.TypeAck:
		var m jobproto.Ack
		if json.Unmarshal(data, &m) == nil {
			j.ack(m)
		}
	case jobproto.TypeWelcome:
		var w jobproto.Welcome
		if json.Unmarshal(data, &w) == nil {
			j.setLimits(w)
		}
	default:
		j.log.Debug("control message of unknown type ignored", "type", env.Type)
	}
}

// startRun checks a run request and starts it, or rejects it.
func (j *jobAgent) startRun(ctx context.Context, m jobproto.Run) {
	log := j.log.With("job", m.Job, "action", m.Action)
	if !jobproto.ValidFileName(m.Job) {
		j.reject(m.Job, fmt.Sprintf("job id %q is not usable here (want 1-128 of A-Z a-z 0-9 . _ -, not starting with . or -)", m.Job), false)
		return
	}
	// The hub sends a run again when it did not see it start (a reconnect
	// lost the started message): a run is never started twice. A running
	// one is announced again; a finished one's stored result is delivered
	// (again) without waiting for a retry delay.
	j.mu.Lock()
	running := j.running[m.Job]
	var startedAt time.Time
	if running != nil {
		startedAt = running.startedAt
	}
	p := j.pending[m.Job]
	if p != nil {
		p.retryAt = time.Time{}
	}
	j.mu.Unlock()
	switch {
	case running != nil:
		log.Info("run for a job already running here: not started again")
		if !startedAt.IsZero() {
			j.sendStarted(m.Job, startedAt)
		}
		return
	case p != nil:
		log.Info("run for a job already finished here: its result is delivered instead")
		j.wake()
		return
	}
	act := j.actions[m.Action]
	if act == nil {
		j.reject(m.Job, fmt.Sprintf("unknown action %q", m.Action), true)
		return
	}
	params, err := act.cfg.CheckParams(m.Params)
	if err != nil {
		j.reject(m.Job, err.Error(), true)
		return
	}
	timeout := time.Duration(act.cfg.Timeout)
	if m.Timeout > 0 && time.Duration(m.Timeout) < timeout {
		timeout = time.Duration(m.Timeout)
	}
	r := &jobRun{j: j, job: m.Job, act: act, params: params, timeout: timeout,
		abortCh: make(chan string, 1), log: log}
	j.mu.Lock()
	j.running[m.Job] = r
	j.mu.Unlock()
	j.st.active.Add(1)
	log.Info("run accepted", "timeout", timeout)
	j.runs.Go(func() { r.execute(ctx) })
}

// has reports whether job is running here or has a stored result.
func (j *jobAgent) has(job string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.running[job] != nil || j.pending[job] != nil
}

// sendStarted tells the hub that a job's process started, if the channel
// is up.
func (j *jobAgent) sendStarted(job string, at time.Time) {
	b, err := json.Marshal(jobproto.Started{Type: jobproto.TypeStarted, Job: job, StartedAt: at})
	if err == nil && j.slot.trySend(context.Background(), client.Text, b) {
		j.st.sent(len(b))
	}
}

// reject answers a run with outcome rejected. The rejection is kept like
// any result (store true), unless the job's id cannot name a file or the
// run message is malformed: then it is only sent (once, if the channel is
// up).
func (j *jobAgent) reject(job, reason string, store bool) {
	now := time.Now().UTC()
	res := &storedResult{Result: jobproto.Result{Type: jobproto.TypeResult, Job: job, Outcome: jobproto.OutcomeRejected,
		ExitCode: -1, Error: reason, StartedAt: now, EndedAt: now}}
	j.st.runsFailed.Add(1)
	j.log.Warn("run rejected", "job", job, "reason", reason)
	if store && j.store != nil {
		j.addResult(res, nil)
		return
	}
	if b, err := marshalResult(&res.Result); err == nil {
		if j.slot.trySend(context.Background(), client.Text, b) {
			j.st.sent(len(b))
		}
	}
}

// abort kills a running job's process group.
func (j *jobAgent) abort(m jobproto.Abort) {
	j.mu.Lock()
	r := j.running[m.Job]
	j.mu.Unlock()
	if r == nil {
		j.log.Info("abort for a job not running here; ignored", "job", m.Job)
		return
	}
	select {
	case r.abortCh <- m.Reason:
	default: // already asked
	}
}

// ack handles the hub's acknowledgement of a result.
func (j *jobAgent) ack(m jobproto.Ack) {
	j.mu.Lock()
	p := j.pending[m.Job]
	if p == nil {
		j.mu.Unlock()
		j.log.Debug("ack for no pending result; ignored", "job", m.Job)
		return
	}
	if m.Error != "" {
		p.sentOn = nil
		d := p.bo.next()
		p.retryAt = time.Now().Add(d)
		j.mu.Unlock()
		j.log.Warn("the hub did not take the result; uploading and sending it again later", "job", m.Job, "error", m.Error, "retry_in", d)
		j.wake()
		return
	}
	delete(j.pending, m.Job)
	j.st.resultsPending.Store(int64(len(j.pending)))
	j.mu.Unlock()
	if j.store != nil {
		j.store.remove(m.Job)
	}
	j.log.Info("result acknowledged", "job", m.Job)
}

// addResult keeps a finished run's result (on disk first, when there is a
// state directory), forgets the run r (if any) and wakes the sender.
func (j *jobAgent) addResult(res *storedResult, r *jobRun) {
	if j.store != nil {
		if err := j.store.save(res); err != nil {
			j.log.Error("could not store the result; it is kept in memory only", "job", res.Job, "error", err)
		}
	}
	j.mu.Lock()
	if r != nil && j.running[r.job] == r {
		delete(j.running, r.job)
	}
	j.pending[res.Job] = &pendingResult{res: res, bo: backoff{p: j.a.backoff}}
	j.st.resultsPending.Store(int64(len(j.pending)))
	j.mu.Unlock()
	j.wake()
}

func (j *jobAgent) wake() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// sendLoop uploads and sends the pending results on c: each once per
// connection, again after an ack with error or a failed upload (with
// backoff), until c fails or ctx ends.
func (j *jobAgent) sendLoop(ctx context.Context, c *client.Conn) {
	for {
		next, ok := j.sendDue(ctx, c)
		if !ok {
			return
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(time.Until(next))
			timer = t.C
		}
		select {
		case <-j.kick:
		case <-timer:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
	}
}

// sendDue sends every result that is due on c. It returns when the next
// one is due (zero: none waits), and false if c failed or ctx ended.
func (j *jobAgent) sendDue(ctx context.Context, c *client.Conn) (time.Time, bool) {
	for {
		if ctx.Err() != nil {
			return time.Time{}, false
		}
		now := time.Now()
		var due *pendingResult
		var next time.Time
		j.mu.Lock()
		for _, p := range j.pending {
			switch {
			case p.sentOn == c:
			case p.retryAt.After(now):
				if next.IsZero() || p.retryAt.Before(next) {
					next = p.retryAt
				}
			case due == nil || p.res.EndedAt.Before(due.res.EndedAt):
				due = p
			}
		}
		j.mu.Unlock()
		if due == nil {
			return next, true
		}
		if !j.deliver(ctx, c, due) {
			return time.Time{}, false
		}
	}
}

// deliver uploads p's files and sends its result on c. It returns false if
// c failed or ctx ended.
func (j *jobAgent) deliver(ctx context.Context, c *client.Conn, p *pendingResult) bool {
	job := p.res.Job
	msg, gone, err := j.uploadFiles(ctx, p.res)
	if ctx.Err() != nil {
		return false
	}
	j.mu.Lock()
	if j.pending[job] != p { // acked or replaced meanwhile
		j.mu.Unlock()
		return true
	}
	switch {
	case gone:
		delete(j.pending, job)
		j.st.resultsPending.Store(int64(len(j.pending)))
		j.mu.Unlock()
		j.log.Warn("the hub no longer knows the job (404 on upload); result dropped", "job", job)
		if j.store != nil {
			j.store.remove(job)
		}
		return true
	case err != nil:
		d := p.bo.next()
		p.retryAt = time.Now().Add(d)
		j.mu.Unlock()
		j.log.Warn("result upload failed; retrying later", "job", job, "error", redact(err.Error()), "retry_in", d)
		return true
	}
	p.sentOn = c // before sending: the ack may come before trySend returns
	j.mu.Unlock()
	b, err := marshalResult(msg)
	if err != nil { // stays marked as sent on c: tried again on the next connection
		j.log.Error("result cannot be encoded", "job", job, "error", err)
		return true
	}
	if j.slot.trySend(ctx, client.Text, b) {
		j.st.sent(len(b))
		j.log.Info("result sent", "job", job, "outcome", msg.Outcome, "files", len(msg.Files))
		return true
	}
	j.mu.Lock()
	if p.sentOn == c {
		p.sentOn = nil
	}
	j.mu.Unlock()
	return false
}

// marshalResult encodes a result message within jobproto.MaxMessageBytes,
// shortening the output tails if escaping made it larger.
func marshalResult(r *jobproto.Result) ([]byte, error) {
	m := *r
	m.Type = jobproto.TypeResult
	for {
		b, err := json.Marshal(&m)
		if err != nil || len(b) <= jobproto.MaxMessageBytes {
			return b, err
		}
		if m.Stdout == "" && m.Stderr == "" {
			return nil, fmt.Errorf("result message is %d bytes, more than %d", len(b), jobproto.MaxMessageBytes)
		}
		m.Stdout, m.Stderr = tailString(m.Stdout, len(m.Stdout)/2), tailString(m.Stderr, len(m.Stderr)/2)
	}
}
