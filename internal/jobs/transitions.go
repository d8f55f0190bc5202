package jobs

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"switchboard/internal/jobproto"
	"switchboard/internal/store"
)

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
	var targets []Agent
	for _, a := range m.connected() {
		if !sel.matches(a.ID, a.Labels) {
			continue
		}
		if act := a.Action(j.Action); act != nil {
			if _, err := act.CheckParams(j.Params); err == nil {
				targets = append(targets, a)
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
	for _, a := range targets {
		if have[a.ID] {
			continue
		}
		if err := m.st.PutRun(ctx, store.Run{JobID: id, AgentID: a.ID, State: store.RunDispatched, ExitCode: -1}); err != nil {
			m.retryDispatch(id, err)
			return
		}
		existing = append(existing, store.Run{AgentID: a.ID})
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
	links := m.agentsOf()
	for _, a := range targets {
		// The run must be started (or reported) within the grace period,
		// whether the agent stays connected or not: no job waits forever
		// on an agent that never answers. SendRun only queues: no agent's
		// channel holds up this job's lock.
		m.armLost(id, a.ID)
		links.SendRun(a.ID, msg)
	}
	// Runs recorded before a crash whose agents are not among the targets
	// (not connected now) get the grace period too.
	sent := map[string]bool{}
	for _, a := range targets {
		sent[a.ID] = true
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
	agents := m.agentsOf()
	for _, r := range runs {
		if r.State.Final() {
			continue
		}
		agents.SendAbort(r.AgentID, jobproto.Abort{Type: jobproto.TypeAbort, Job: id, Reason: reason})
	}
}

// markLost ends a run whose agent did not come back within the grace
// period.
func (m *Manager) markLost(jobID, agentID string) {
	if _, running := m.agentsOf().Status(agentID, jobID); running {
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
	if connected, _ := m.agentsOf().Status(agentID, jobID); r.State == store.RunDispatched && connected {
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
	m.deleted(id)
	return nil
}
