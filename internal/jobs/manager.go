package jobs

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"switchboard/internal/blob"
	"switchboard/internal/jobproto"
	"switchboard/internal/relay"
	"switchboard/internal/store"
)

// Defaults of Config.
const (
	DefaultLostGrace    = 60 * time.Second
	DefaultMaxWait      = 60 * time.Second
	DefaultMaxFileBytes = 64 << 20
	DefaultMaxRunBytes  = 256 << 20
	DefaultDestruction  = 30 * 24 * time.Hour
	// DefaultTransferIdleTimeout is how long an upload or a download may
	// go without moving a byte.
	DefaultTransferIdleTimeout = 60 * time.Second
	// DefaultMaxWaitsPerSubject is how many WAIT requests one subject may
	// have blocked at once.
	DefaultMaxWaitsPerSubject = 16
	// storeTimeout bounds one store call made outside a request.
	storeTimeout = 30 * time.Second
)

// AgentsTopic is the system topic carrying agent connection events.
const AgentsTopic = "agents"

// LogTopic returns the topic of a job's live log.
func LogTopic(jobID string) string { return "jobs/" + jobID + "/log" }

// LogTopicPrefix is the prefix of every job's log topic: only the hub
// publishes there.
const LogTopicPrefix = "jobs/"

// Publisher delivers server messages to a relay topic's readers.
type Publisher interface {
	Publish(topic string, m relay.Message) int
}

// Config configures a Manager. Zero values mean the documented defaults.
//
// It holds the settings of the whole jobs subsystem, so that a node's
// flags fill one place and New applies their defaults once: the UWS
// binding (uwsapi) reads MaxWait, MaxWaitsPerSubject, TransferIdleTimeout,
// MaxFileBytes and MaxRunBytes, and the agent link PingInterval,
// PongTimeout and WriteTimeout, through Manager.Config.
type Config struct {
	// Store keeps jobs, runs and agents. Required.
	Store store.JobStore
	// Blobs holds the output files, under keys "job/agent/file" (see
	// FileKey). Nil: a blob.Dir in BlobDir.
	Blobs blob.Store
	// BlobDir is the directory of the output files when Blobs is nil.
	BlobDir string
	// NodeID names this node (recorded on agents, sent in welcome).
	NodeID string
	// Publisher receives the live logs and agent events; nil drops them.
	Publisher Publisher
	// LostGrace is how long a run survives its agent's disconnection.
	LostGrace time.Duration
	// MaxWait caps WAIT (and is what WAIT=-1 means). A blocked WAIT
	// request's connection deadlines move to the end of its wait plus
	// TransferIdleTimeout (the time its answer has to go out), whatever
	// the server's ordinary request timeout.
	MaxWait time.Duration
	// MaxWaitsPerSubject bounds the WAIT requests one subject (the
	// token's sub; admin tokens without one share "") may have blocked at
	// once: more get 429 too_many_waits (default 16).
	MaxWaitsPerSubject int
	// TransferIdleTimeout bounds an upload of an output file, and a
	// download of a result, by progress instead of total time: each read
	// or write that moves bytes moves the connection's deadlines this far
	// ahead, so a transfer fails only when it stalls this long (default
	// 60 s).
	TransferIdleTimeout time.Duration
	// MaxFileBytes and MaxRunBytes bound one uploaded file and one run's
	// files together; uploads in flight count against MaxRunBytes from
	// the moment they are admitted (by their Content-Length), so parallel
	// uploads cannot pass it together.
	MaxFileBytes, MaxRunBytes int64
	// DefaultDestruction is the destruction time of a new job, counted
	// from its creation; negative means none.
	DefaultDestruction time.Duration
	// PingInterval and PongTimeout detect dead agent channels (defaults
	// 20 s and 15 s); WriteTimeout bounds a write to one (10 s).
	PingInterval, PongTimeout, WriteTimeout time.Duration
	// Logger receives the manager's logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Denier, if set, is asked whether an agent's token is revoked when
	// its channel is admitted and again at its hello, each time under the
	// lock CloseWhere takes. A revocation that is visible to Denier before
	// CloseWhere runs therefore cannot miss a channel being admitted.
	Denier Denier
}

// Manager runs jobs on agents. Create it with New, call Start, and Stop at
// shutdown.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	st    store.JobStore
	blobs blob.Store

	mu       sync.Mutex
	agents   map[string]*agentSession // connected, by id
	links    map[*agentSession]bool   // every admitted channel, before its hello too
	watchers map[string]*Watcher      // job id → its next phase change
	runGen   map[string]uint64        // job id → count of run changes, for the render cache
	timers   map[string]*time.Timer   // "exec:"+job, "destroy:"+job, "lost:"+job+"/"+agent
	jobLocks map[string]*jobLock      // serialises transitions of one job
	waiting  map[string]int           // blocked WAIT requests per job
	stopped  bool

	bg sync.WaitGroup // agent sessions and timer callbacks in flight
}

type jobLock struct {
	mu   sync.Mutex
	refs int
}

// New checks cfg and returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || (cfg.Blobs == nil && cfg.BlobDir == "") {
		return nil, errors.New("jobs: Store, and Blobs or BlobDir, are required")
	}
	if cfg.LostGrace <= 0 {
		cfg.LostGrace = DefaultLostGrace
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxWaitsPerSubject <= 0 {
		cfg.MaxWaitsPerSubject = DefaultMaxWaitsPerSubject
	}
	if cfg.TransferIdleTimeout <= 0 {
		cfg.TransferIdleTimeout = DefaultTransferIdleTimeout
	}
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = DefaultMaxFileBytes
	}
	if cfg.MaxRunBytes <= 0 {
		cfg.MaxRunBytes = DefaultMaxRunBytes
	}
	if cfg.DefaultDestruction == 0 {
		cfg.DefaultDestruction = DefaultDestruction
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 20 * time.Second
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	blobs := cfg.Blobs
	if blobs == nil {
		d, err := blob.NewDir(cfg.BlobDir)
		if err != nil {
			return nil, fmt.Errorf("jobs: %w", err)
		}
		blobs = d
	}
	return &Manager{cfg: cfg, log: cfg.Logger, st: cfg.Store, blobs: blobs,
		agents: map[string]*agentSession{}, links: map[*agentSession]bool{}, watchers: map[string]*Watcher{}, runGen: map[string]uint64{},
		timers: map[string]*time.Timer{}, jobLocks: map[string]*jobLock{}, waiting: map[string]int{}}, nil
}

// Start recovers from the store what a previous process left: agents it
// held are marked disconnected; every unfinished job is re-armed (its
// runs get the lost grace period to be reported by their agents again,
// its execution and destruction deadlines are set again), and QUEUED jobs
// are dispatched.
func (m *Manager) Start(ctx context.Context) error {
	now := m.cfg.Now()
	if err := m.st.DisconnectAgents(ctx, m.cfg.NodeID, now); err != nil {
		return fmt.Errorf("jobs: start: %w", err)
	}
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		return fmt.Errorf("jobs: start: %w", err)
	}
	for _, j := range active {
		m.armDestruction(j)
		switch j.Phase {
		case store.PhaseQueued:
			// Give the agents the grace period to reconnect first.
			m.setTimer("dispatch:"+j.ID, m.cfg.LostGrace, func() { m.dispatch(j.ID) })
		case store.PhaseExecuting:
			m.armExecDeadline(j)
			runs, err := m.st.Runs(ctx, j.ID)
			if err != nil {
				return fmt.Errorf("jobs: start: %w", err)
			}
			for _, r := range runs {
				if !r.State.Final() {
					m.armLost(r.JobID, r.AgentID)
				}
			}
			// A crash between the last run's result and the job's
			// phase change leaves a finished EXECUTING job.
			m.goBackground(func() { m.finishIfDone(j.ID) })
		}
	}
	m.log.Info("jobs: started", "active_jobs", len(active))
	return nil
}

// Stop closes every agent channel (1001), stops the timers and waits for
// the background work, within ctx.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	m.stopped = true
	for k, t := range m.timers {
		t.Stop()
		delete(m.timers, k)
	}
	sessions := make([]*agentSession, 0, len(m.agents))
	for _, s := range m.agents {
		sessions = append(sessions, s)
	}
	m.mu.Unlock()
	for _, s := range sessions {
		s.close(relay.CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() { m.bg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, s := range sessions {
			s.conn.Abort()
		}
		return fmt.Errorf("jobs: stop: %w", ctx.Err())
	}
}

// goBackground runs f on a goroutine Stop waits for, unless stopped.
func (m *Manager) goBackground(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.bg.Go(f)
}

// lockJob serialises the transitions of one job; call the returned
// function to unlock.
func (m *Manager) lockJob(id string) func() {
	m.mu.Lock()
	l := m.jobLocks[id]
	if l == nil {
		l = &jobLock{}
		m.jobLocks[id] = l
	}
	l.refs++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(m.jobLocks, id)
		}
		m.mu.Unlock()
	}
}

// Watcher is closed at a job's next phase change (or deletion); see
// Watch.
type Watcher struct {
	done chan struct{}
	// job is the job after the change, when known (set before done is
	// closed): woken requests answer from it without reading the store.
	job   store.Job
	known bool
	refs  int // requests holding it, under Manager.mu
}

// phaseChanged wakes the WAIT requests of j with its new state.
func (m *Manager) phaseChanged(j store.Job) { m.wake(j.ID, &j) }

// changed wakes the WAIT requests of a job, which read it again (after a
// deletion, or a change whose result is not at hand).
func (m *Manager) changed(id string) { m.wake(id, nil) }

func (m *Manager) wake(id string, j *store.Job) {
	m.mu.Lock()
	w := m.watchers[id]
	delete(m.watchers, id)
	m.mu.Unlock()
	if w == nil {
		return
	}
	if j != nil {
		w.job, w.known = *j, true
	}
	close(w.done)
}

// runsChanged records that a job's runs changed (its rendering too).
func (m *Manager) runsChanged(id string) {
	m.mu.Lock()
	m.runGen[id]++
	m.mu.Unlock()
}

// Watch returns the watcher of the job's next phase change. Take it
// before reading the job, so that no change slips between, and give it
// back with Unwatch (or WaitPhase).
func (m *Manager) Watch(id string) *Watcher {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.watchers[id]
	if w == nil {
		w = &Watcher{done: make(chan struct{})}
		m.watchers[id] = w
	}
	w.refs++
	return w
}

// Unwatch releases a watcher from Watch; the last release forgets it.
func (m *Manager) Unwatch(id string, w *Watcher) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.refs--; w.refs <= 0 && m.watchers[id] == w {
		delete(m.watchers, id)
	}
}

// Waiting returns how many WAIT requests are blocked on the job.
func (m *Manager) Waiting(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.waiting[id]
}

func (m *Manager) addWaiting(id string, n int) {
	m.mu.Lock()
	if m.waiting[id] += n; m.waiting[id] <= 0 {
		delete(m.waiting, id)
	}
	m.mu.Unlock()
}

// setTimer (re)arms the timer named key to run f after d.
func (m *Manager) setTimer(key string, d time.Duration, f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	if t := m.timers[key]; t != nil {
		t.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(max(d, 0), func() {
		m.mu.Lock()
		if m.stopped || m.timers[key] != t {
			m.mu.Unlock()
			return
		}
		delete(m.timers, key)
		m.bg.Add(1)
		m.mu.Unlock()
		defer m.bg.Done()
		f()
	})
	m.timers[key] = t
}

// stopTimer disarms the timer named key.
func (m *Manager) stopTimer(key string) {
	m.mu.Lock()
	if t := m.timers[key]; t != nil {
		t.Stop()
		delete(m.timers, key)
	}
	m.mu.Unlock()
}

func (m *Manager) armExecDeadline(j store.Job) {
	if j.ExecDuration <= 0 || j.StartedAt.IsZero() || j.Phase.Final() {
		m.stopTimer("exec:" + j.ID)
		return
	}
	d := j.StartedAt.Add(j.ExecDuration).Sub(m.cfg.Now())
	m.setTimer("exec:"+j.ID, d, func() {
		m.Abort(j.ID, fmt.Sprintf("execution duration of %s exceeded", j.ExecDuration))
	})
}

func (m *Manager) armDestruction(j store.Job) {
	if j.Destruction.IsZero() || j.Phase == store.PhaseArchived {
		m.stopTimer("destroy:" + j.ID)
		return
	}
	m.setTimer("destroy:"+j.ID, j.Destruction.Sub(m.cfg.Now()), func() { m.destroy(j.ID) })
}

func (m *Manager) armLost(jobID, agentID string) {
	m.setTimer("lost:"+jobID+"/"+agentID, m.cfg.LostGrace, func() { m.markLost(jobID, agentID) })
}

// armLostIfUnarmed arms the lost timer of a run unless it is running.
func (m *Manager) armLostIfUnarmed(jobID, agentID string) {
	m.mu.Lock()
	armed := m.timers["lost:"+jobID+"/"+agentID] != nil
	m.mu.Unlock()
	if !armed {
		m.armLost(jobID, agentID)
	}
}

// bgCtx returns a context for store calls made outside a request.
func bgCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// newJobID returns a fresh job id: 20 characters of lower-case base32
// (100 random bits).
func newJobID() string {
	var b [13]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:20]
}

// PhaseError is a change that the job's phase does not allow (UWS: 403).
type PhaseError struct{ Msg string }

func (e *PhaseError) Error() string { return e.Msg }

// Run moves a PENDING (or HELD) job to QUEUED and dispatches it (PHASE=RUN);
// a job QUEUED or EXECUTING already is left as it is. It returns the job
// after the change, or a *PhaseError.
func (m *Manager) Run(ctx context.Context, id string) (store.Job, error) {
	unlock := m.lockJob(id)
	j, err := m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		switch j.Phase {
		case store.PhasePending, store.PhaseHeld:
			j.Phase = store.PhaseQueued
			return nil
		case store.PhaseQueued, store.PhaseExecuting:
			return errNoChange
		}
		return &PhaseError{fmt.Sprintf("a job in phase %s cannot be run", j.Phase)}
	})
	unlock()
	if errors.Is(err, errNoChange) {
		return m.st.Job(ctx, id)
	}
	if err != nil {
		return j, err
	}
	m.phaseChanged(j)
	m.dispatch(id)
	return m.st.Job(ctx, id)
}

// errNoChange ends an UpdateJob callback without writing.
var errNoChange = errors.New("no change")

// dispatch sends a QUEUED job to every matched, connected agent offering
// its action, and moves it to EXECUTING, or to ERROR when none matches.
func (m *Manager) dispatch(id string) {
	unlock := m.lockJob(id)
	defer unlock()
	ctx, cancel := bgCtx()
	defer cancel()
	j, err := m.st.Job(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		m.retryDispatch(id, err)
		return
	}
	if err != nil || j.Phase != store.PhaseQueued {
		return
	}
	existing, err := m.st.Runs(ctx, id)
	if err != nil {
		m.retryDispatch(id, err)
		return
	}
	sel, _ := parseTargets(j.Targets)
	var targets []*agentSession
	for _, s := range m.connected() {
		if !sel.matches(s.id, s.labels) {
			continue
		}
		if a := s.action(j.Action); a != nil {
			if _, err := a.CheckParams(j.Params); err == nil {
				targets = append(targets, s)
			}
		}
	}
	now := m.cfg.Now()
	if len(targets) == 0 && len(existing) == 0 {
		j, err = m.st.UpdateJob(ctx, id, func(j *store.Job) error {
			j.Phase, j.EndedAt = store.PhaseError, now
			j.StartedAt = now
			j.ErrorType = "fatal"
			j.ErrorSummary = fmt.Sprintf("no connected agent matches targets %q and offers action %q with these parameters", j.Targets, j.Action)
			return nil
		})
		if err == nil {
			m.phaseChanged(j)
		}
		return
	}
	have := map[string]bool{}
	for _, r := range existing {
		have[r.AgentID] = true
	}
	for _, s := range targets {
		if have[s.id] {
			continue
		}
		if err := m.st.PutRun(ctx, store.Run{JobID: id, AgentID: s.id, State: store.RunDispatched, ExitCode: -1}); err != nil {
			m.retryDispatch(id, err)
			return
		}
		existing = append(existing, store.Run{AgentID: s.id})
	}
	agents := make([]string, 0, len(existing))
	for _, r := range existing {
		agents = append(agents, r.AgentID)
	}
	sort.Strings(agents)
	j, err = m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		j.Phase, j.StartedAt, j.Agents = store.PhaseExecuting, now, agents
		return nil
	})
	if err != nil {
		m.retryDispatch(id, err)
		return
	}
	m.runsChanged(id)
	m.phaseChanged(j)
	m.armExecDeadline(j)
	msg := jobproto.Run{Type: jobproto.TypeRun, Job: id, Action: j.Action, Params: j.Params}
	if j.ExecDuration > 0 {
		msg.Timeout = jobproto.Duration(j.ExecDuration)
	}
	for _, s := range targets {
		// The run must be started (or reported) within the grace period,
		// whether the agent stays connected or not: no job waits forever
		// on an agent that never answers.
		m.armLost(id, s.id)
		if s.markSent(id) {
			s.send(msg)
		}
	}
	// Runs recorded before a crash whose agents are not among the targets
	// (not connected now) get the grace period too.
	sent := map[string]bool{}
	for _, s := range targets {
		sent[s.id] = true
	}
	for _, r := range existing {
		if !sent[r.AgentID] && !r.State.Final() {
			m.armLostIfUnarmed(id, r.AgentID)
		}
	}
}

// dispatchRetry is how long a QUEUED job waits before its dispatch is
// tried again after a store failure.
const dispatchRetry = 5 * time.Second

// retryDispatch logs a failed dispatch and tries again later, so that a
// database outage does not leave the job QUEUED for ever.
func (m *Manager) retryDispatch(id string, err error) {
	m.log.Error("jobs: dispatch failed; retrying", "job", id, "retry_in", dispatchRetry, "err", err)
	m.setTimer("dispatch:"+id, dispatchRetry, func() { m.dispatch(id) })
}

// connected returns the connected agents.
func (m *Manager) connected() []*agentSession {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*agentSession, 0, len(m.agents))
	for _, s := range m.agents {
		out = append(out, s)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].id < out[k].id })
	return out
}

// session returns the connected agent id, or nil.
func (m *Manager) session(id string) *agentSession {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.agents[id]
}

// Abort moves an unfinished job to ABORTED and tells its agents to kill
// their runs (PHASE=ABORT). why, if not empty, becomes the error summary.
// It returns the job after the change, or a *PhaseError.
func (m *Manager) Abort(id, why string) (store.Job, error) {
	unlock := m.lockJob(id)
	defer unlock()
	ctx, cancel := bgCtx()
	defer cancel()
	now := m.cfg.Now()
	j, err := m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		switch j.Phase {
		case store.PhasePending, store.PhaseQueued, store.PhaseExecuting, store.PhaseHeld, store.PhaseSuspended:
			j.Phase, j.EndedAt = store.PhaseAborted, now
			if why != "" {
				j.ErrorType, j.ErrorSummary = "fatal", why
			}
			return nil
		case store.PhaseAborted:
			return errNoChange
		}
		return &PhaseError{fmt.Sprintf("a job in phase %s cannot be aborted", j.Phase)}
	})
	if errors.Is(err, errNoChange) {
		return m.st.Job(ctx, id)
	}
	if err != nil {
		return j, err
	}
	m.stopTimer("exec:" + id)
	m.phaseChanged(j)
	m.abortRuns(ctx, id, "job aborted")
	return j, nil
}

// abortRuns asks the agents of the job's unfinished runs to kill them.
func (m *Manager) abortRuns(ctx context.Context, id, reason string) {
	runs, err := m.st.Runs(ctx, id)
	if err != nil {
		m.log.Error("jobs: abort", "job", id, "err", err)
		return
	}
	for _, r := range runs {
		if r.State.Final() {
			continue
		}
		if s := m.session(r.AgentID); s != nil {
			s.send(jobproto.Abort{Type: jobproto.TypeAbort, Job: id, Reason: reason})
		}
	}
}

// markLost ends a run whose agent did not come back within the grace
// period.
func (m *Manager) markLost(jobID, agentID string) {
	if s := m.session(agentID); s != nil && s.isRunning(jobID) {
		return // it came back and reported the run
	}
	unlock := m.lockJob(jobID)
	ctx, cancel := bgCtx()
	defer cancel()
	r, err := m.st.Run(ctx, jobID, agentID)
	if err != nil || r.State.Final() {
		unlock()
		return
	}
	if r.State == store.RunDispatched && m.session(agentID) != nil {
		r.Error = fmt.Sprintf("agent %s did not start the run within %s", agentID, m.cfg.LostGrace)
	} else {
		r.Error = fmt.Sprintf("agent %s disconnected mid-run and did not report the run within %s", agentID, m.cfg.LostGrace)
	}
	r.State, r.EndedAt = store.RunLost, m.cfg.Now()
	err = m.st.PutRun(ctx, r)
	unlock()
	if err != nil {
		m.log.Error("jobs: mark run lost", "job", jobID, "agent", agentID, "err", err)
		return
	}
	m.log.Warn("jobs: run lost", "job", jobID, "agent", agentID)
	m.runsChanged(jobID)
	m.finishIfDone(jobID)
}

// finishIfDone moves an EXECUTING job whose runs have all ended to
// COMPLETED or ERROR.
func (m *Manager) finishIfDone(id string) {
	unlock := m.lockJob(id)
	defer unlock()
	ctx, cancel := bgCtx()
	defer cancel()
	// Counting first keeps a job of N agents linear: only the last
	// result reads all the runs.
	total, unfinished, err := m.st.UnfinishedRuns(ctx, id)
	if err != nil {
		m.log.Error("jobs: finish", "job", id, "err", err)
		return
	}
	if total == 0 || unfinished > 0 {
		return
	}
	runs, err := m.st.Runs(ctx, id)
	if err != nil {
		m.log.Error("jobs: finish", "job", id, "err", err)
		return
	}
	var failed []string
	end := time.Time{}
	for _, r := range runs {
		if !r.State.Final() {
			return
		}
		if r.EndedAt.After(end) {
			end = r.EndedAt
		}
		if r.State != store.RunSucceeded {
			failed = append(failed, describeFailure(r))
		}
	}
	if len(runs) == 0 {
		return
	}
	if end.IsZero() {
		end = m.cfg.Now()
	}
	j, err := m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.Phase != store.PhaseExecuting {
			return errNoChange
		}
		j.EndedAt = end
		if len(failed) == 0 {
			j.Phase = store.PhaseCompleted
			return nil
		}
		j.Phase, j.ErrorType = store.PhaseError, "fatal"
		j.ErrorSummary = fmt.Sprintf("%d of %d agents failed: %s", len(failed), len(runs), strings.Join(failed, "; "))
		if len(j.ErrorSummary) > 4000 {
			j.ErrorSummary = Truncate(j.ErrorSummary, 4000) + "…"
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return
	}
	if err != nil {
		m.log.Error("jobs: finish", "job", id, "err", err)
		return
	}
	m.stopTimer("exec:" + id)
	m.phaseChanged(j)
	m.log.Info("jobs: job ended", "job", id, "phase", j.Phase, "runs", len(runs), "failed", len(failed))
}

func describeFailure(r store.Run) string {
	s := r.AgentID + " " + string(r.State)
	if r.State == store.RunFailed && r.ExitCode >= 0 {
		s += fmt.Sprintf(" (exit status %d)", r.ExitCode)
	}
	if r.Error != "" {
		e := r.Error
		if len(e) > 200 {
			e = Truncate(e, 200) + "…"
		}
		s += ": " + e
	}
	return s
}

// destroy archives a job whose destruction time has come: its runs are
// aborted if still going, its results and files deleted.
func (m *Manager) destroy(id string) {
	ctx, cancel := bgCtx()
	defer cancel()
	j, err := m.st.Job(ctx, id)
	if err != nil {
		m.retryDestroy(id, err)
		return
	}
	if !m.destructionDue(j) {
		m.armDestruction(j) // moved meanwhile
		return
	}
	if !j.Phase.Final() {
		m.Abort(id, "destruction time reached")
	}
	unlock := m.lockJob(id)
	defer unlock()
	// Read again under the lock: DESTRUCTION may have moved meanwhile.
	if j, err = m.st.Job(ctx, id); err != nil {
		m.retryDestroy(id, err)
		return
	}
	if !m.destructionDue(j) {
		m.armDestruction(j)
		return
	}
	if _, err := m.st.ClearResults(ctx, id); err != nil {
		m.retryDestroy(id, err)
		return
	}
	if err := m.blobs.Delete(ctx, id); err != nil {
		m.log.Error("jobs: destroy: remove files", "job", id, "err", err)
	}
	j, err = m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		j.Phase = store.PhaseArchived
		return nil
	})
	if err != nil {
		m.retryDestroy(id, err)
		return
	}
	m.runsChanged(id)
	m.phaseChanged(j)
}

// destructionDue reports whether j's destruction time has come (and it is
// not archived yet).
func (m *Manager) destructionDue(j store.Job) bool {
	return j.Phase != store.PhaseArchived && !j.Destruction.IsZero() && !j.Destruction.After(m.cfg.Now().Add(time.Second))
}

// retryDestroy logs a failed destruction and tries again in a minute,
// unless the job is gone.
func (m *Manager) retryDestroy(id string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	m.log.Error("jobs: destroy failed; retrying", "job", id, "retry_in", time.Minute, "err", err)
	m.setTimer("destroy:"+id, time.Minute, func() { m.destroy(id) })
}

// Remove deletes a job: runs aborted, files and records deleted, WAITs
// woken.
func (m *Manager) Remove(ctx context.Context, id string) error {
	j, err := m.st.Job(ctx, id)
	if err != nil {
		return err
	}
	if !j.Phase.Final() {
		m.Abort(id, "job deleted")
	}
	unlock := m.lockJob(id)
	defer unlock()
	if err := m.st.DeleteJob(ctx, id); err != nil {
		return err
	}
	m.stopTimer("exec:" + id)
	m.stopTimer("destroy:" + id)
	for _, a := range j.Agents {
		m.stopTimer("lost:" + id + "/" + a)
	}
	if err := m.blobs.Delete(ctx, id); err != nil {
		m.log.Error("jobs: delete files", "job", id, "err", err)
	}
	m.mu.Lock()
	delete(m.runGen, id)
	m.mu.Unlock()
	m.changed(id)
	return nil
}

// FileKey is the blob key of a run's output file; RunPrefix covers the
// run's files, and the job id alone all of a job's. The key is also the
// file's store.ResultFile.Path (the same as the relative path of the
// directory layout before the blob store).
func FileKey(jobID, agentID, name string) string { return RunPrefix(jobID, agentID) + "/" + name }

// RunPrefix is the blob key prefix of a run's output files.
func RunPrefix(jobID, agentID string) string { return jobID + "/" + agentID }

// publishLog publishes output lines on the job's log topic.
func (m *Manager) publishLog(jobID, agentID, stream string, lines []string) {
	if m.cfg.Publisher == nil {
		return
	}
	topic := LogTopic(jobID)
	for _, l := range lines {
		b, _ := json.Marshal(struct {
			Agent  string `json:"agent"`
			Stream string `json:"stream"`
			Line   string `json:"line"`
		}{agentID, stream, l})
		m.cfg.Publisher.Publish(topic, relay.Message{Type: relay.Text, Data: b})
	}
}
