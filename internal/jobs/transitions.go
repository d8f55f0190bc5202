package jobs

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/store"
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

// dispatch records a QUEUED job's targets (planTargets: a run each, whose
// state is its fate), moves it to EXECUTING, and sends the runs of the
// connected targets as their slots allow (pump). A job none of whose
// targets can run (every one skipped or rejected) goes to ERROR.
func (m *Manager) dispatch(id string) {
	ctx, cancel := bgCtx()
	j, err := m.st.Job(ctx, id)
	cancel()
	if err == nil && len(j.Matrix) > 0 {
		m.startMatrix(j) // a matrix job's runs are its children's
		return
	}
	if err == nil && len(j.Steps) > 0 {
		m.startSteps(j) // a test's runs are its steps'
		return
	}
	queued, ok := m.recordTargets(id)
	if !ok {
		return
	}
	for _, agentID := range queued {
		m.pump(agentID)
	}
}

// recordTargets is dispatch under the job's lock; it returns the agents
// given a queued run, and false when there is nothing to send.
func (m *Manager) recordTargets(id string) ([]string, bool) {
	unlock := m.lockJob(id)
	defer unlock()
	ctx, cancel := bgCtx()
	defer cancel()
	j, err := m.st.Job(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		m.retryDispatch(id, err)
		return nil, false
	}
	if err != nil || j.Phase != store.PhaseQueued {
		return nil, false
	}
	existing, err := m.st.Runs(ctx, id)
	if err != nil {
		m.retryDispatch(id, err)
		return nil, false
	}
	known, err := m.st.Agents(ctx)
	if err != nil {
		m.retryDispatch(id, err)
		return nil, false
	}
	have := map[string]bool{}
	for _, r := range existing {
		have[r.AgentID] = true
	}
	planned := m.planTargets(j, known, m.connected(), have)
	now := m.cfg.Now()
	all := append(slices.Clone(existing), planned...)
	if !slices.ContainsFunc(all, func(r store.Run) bool { return !r.State.Final() }) {
		// Nothing will run: record the fates, and end the job.
		for _, r := range planned {
			if err := m.st.PutRun(ctx, r); err != nil {
				m.retryDispatch(id, err)
				return nil, false
			}
		}
		var why []string
		for _, r := range all {
			why = append(why, describeFailure(r))
		}
		j, err = m.st.UpdateJob(ctx, id, func(j *store.Job) error {
			j.Phase, j.EndedAt = store.PhaseError, now
			j.StartedAt = now
			j.Agents = runAgents(all)
			j.ErrorType = "fatal"
			j.ErrorSummary = summarize(fmt.Sprintf("no targeted agent can run action %q (targets %q, REQUIRE=%s): %s",
				j.Action, j.Targets, requireName(j.Require), strings.Join(why, "; ")))
			if len(all) == 0 {
				j.ErrorSummary = fmt.Sprintf("no agent matches targets %q", j.Targets)
			}
			return nil
		})
		if err == nil {
			m.runsChanged(id)
			m.phaseChanged(j)
		}
		return nil, false
	}
	for _, r := range planned {
		if err := m.st.PutRun(ctx, r); err != nil {
			m.retryDispatch(id, err)
			return nil, false
		}
	}
	j, err = m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		j.Phase, j.StartedAt, j.Agents = store.PhaseExecuting, now, runAgents(all)
		return nil
	})
	if err != nil {
		m.retryDispatch(id, err)
		return nil, false
	}
	m.runsChanged(id)
	m.phaseChanged(j)
	m.armExecDeadline(j)
	var queued []string
	for _, r := range all {
		switch r.State {
		case store.RunQueued:
			queued = append(queued, r.AgentID)
		case store.RunWaiting, store.RunDispatched, store.RunRunning:
			// The agent is away (or the run was recorded before a
			// crash): it has the grace period to come back.
			m.armLostIfUnarmed(id, r.AgentID)
		}
	}
	return queued, true
}

// runAgents returns the sorted agent ids of runs.
func runAgents(runs []store.Run) []string {
	out := make([]string, 0, len(runs))
	for _, r := range runs {
		out = append(out, r.AgentID)
	}
	sort.Strings(out)
	return out
}

// requireName names a Job.Require as the REQUIRE parameter does.
func requireName(r string) string {
	if r == "" {
		return RequireAll
	}
	return r
}

// summarize caps an error summary.
func summarize(s string) string {
	if len(s) > 4000 {
		return Truncate(s, 4000) + "…"
	}
	return s
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
// their runs (PHASE=ABORT); a matrix job's unfinished children are aborted
// too. why, if not empty, becomes the error summary. It returns the job
// after the change, or a *PhaseError.
func (m *Manager) Abort(id, why string) (store.Job, error) {
	j, err := m.abortOne(id, why)
	if err == nil && isParent(j) {
		m.abortChildren(id, why)
	}
	return j, err
}

// abortOne is Abort without the children of a matrix job.
func (m *Manager) abortOne(id, why string) (store.Job, error) {
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
		if r.State == store.RunWaiting || r.State == store.RunQueued {
			// Never sent: nothing to kill, and no result will come.
			r.State, r.EndedAt, r.Error = store.RunAborted, m.cfg.Now(), reason+" before the run was sent"
			if err := m.st.PutRun(ctx, r); err != nil {
				m.log.Error("jobs: abort a run not sent", "job", id, "agent", r.AgentID, "err", err)
			}
			m.stopTimer("lost:" + id + "/" + r.AgentID)
			m.runsChanged(id)
			continue
		}
		if r.State.Final() {
			continue
		}
		agents.SendAbort(r.AgentID, jobproto.Abort{Type: jobproto.TypeAbort, Job: id, Reason: reason})
		m.pumpLater(r.AgentID) // the run's slot is free
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
	connected, _ := m.agentsOf().Status(agentID, jobID)
	if (r.State == store.RunQueued || r.State == store.RunWaiting) && connected {
		// Waiting for a slot on a connected agent is not being lost
		// (the execution duration bounds it); make sure it is sent when
		// one frees (after a change of the timer lease's holder, or when
		// the agent's connection was not seen here).
		if r.State == store.RunWaiting {
			r.State = store.RunQueued
			if err := m.st.PutRun(ctx, r); err == nil {
				m.runsChanged(jobID)
			}
		}
		unlock()
		m.pumpLater(agentID)
		return
	}
	if left := m.cfg.LostGrace - time.Since(r.UpdatedAt); r.State == store.RunDispatched && connected && left > 0 {
		// Sent less than a grace period ago: by another node, from a
		// queue, after this timer was armed (at RUN, for a target that
		// was away). The store stamps UpdatedAt with the wall clock.
		unlock()
		m.setTimer("lost:"+jobID+"/"+agentID, left, func() { m.markLost(jobID, agentID) })
		return
	}
	switch {
	case r.State == store.RunWaiting || r.State == store.RunQueued:
		r.Error = fmt.Sprintf("agent %s was not connected within %s of RUN", agentID, m.cfg.LostGrace)
	case r.State == store.RunDispatched && connected:
		r.Error = fmt.Sprintf("agent %s did not start the run within %s", agentID, m.cfg.LostGrace)
	default:
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
	m.pump(agentID) // a slot the lost run held is free
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
	var failed, skipped []string
	succeeded := 0
	end := time.Time{}
	for _, r := range runs {
		if !r.State.Final() {
			return
		}
		if r.EndedAt.After(end) {
			end = r.EndedAt
		}
		switch r.State {
		case store.RunSucceeded:
			succeeded++
		case store.RunSkipped: // by choice (REQUIRE, a selector): not a failure
			skipped = append(skipped, describeFailure(r))
		default:
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
		switch {
		case len(failed) == 0 && succeeded > 0:
			j.Phase = store.PhaseCompleted
			return nil
		case len(failed) == 0:
			j.Phase, j.ErrorType = store.PhaseError, "fatal"
			j.ErrorSummary = summarize("no targeted agent ran the action: " + strings.Join(skipped, "; "))
			return nil
		}
		j.Phase, j.ErrorType = store.PhaseError, "fatal"
		j.ErrorSummary = fmt.Sprintf("%d of %d agents failed: %s", len(failed), len(runs), strings.Join(failed, "; "))
		if len(skipped) > 0 {
			j.ErrorSummary += fmt.Sprintf(" (%d skipped)", len(skipped))
		}
		j.ErrorSummary = summarize(j.ErrorSummary)
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
	if err := m.forChildren(ctx, j, func(child string) error { return m.Remove(ctx, child) }); err != nil {
		return err
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
