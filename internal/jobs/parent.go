package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// What a matrix job and a test of several steps share: a parent job whose
// runs are made by child jobs (see isParent).

// parentKind names one kind of parent job in its summaries and logs.
type parentKind struct {
	children string // the children, plural ("combinations", "steps"): summaries and the log's count key
	none     string // the ErrorSummary of a parent with no child left
	ended    string // the log message when the parent has ended
	failEnd  string // the log message when ending the parent failed
}

var (
	matrixKind = parentKind{children: "combinations", none: "the matrix job has no combination left",
		ended: "jobs: matrix job ended", failEnd: "jobs: finish a matrix job"}
	stepsKind = parentKind{children: "steps", none: "the test has no step left",
		ended: "jobs: test of several steps ended", failEnd: "jobs: end a test of several steps"}
)

// childFailure says why the ended child k did not complete ("" when it
// completed): its phase and the start of its error summary.
func childFailure(k store.Job) string {
	if k.Phase == store.PhaseCompleted {
		return ""
	}
	why := string(k.Phase)
	if k.ErrorSummary != "" {
		why += ": " + Truncate(k.ErrorSummary, 300)
	}
	return why
}

// childrenByID reads the children of the parent job id, by job id.
func (m *Manager) childrenByID(ctx context.Context, id string) (map[string]store.Job, error) {
	kids, err := m.st.Jobs(ctx, store.JobFilter{Parent: id, Phases: store.Phases})
	if err != nil {
		return nil, err
	}
	byID := make(map[string]store.Job, len(kids))
	for _, k := range kids {
		byID[k.ID] = k
	}
	return byID, nil
}

// executingParent reads the job id and reports whether it is an
// EXECUTING parent of the kind is tells; logMsg names a failed read
// (an absent job is no failure).
func (m *Manager) executingParent(ctx context.Context, id string, is func(store.Job) bool, logMsg string) (store.Job, bool) {
	j, err := m.st.Job(ctx, id)
	if err != nil || j.Phase != store.PhaseExecuting || !is(j) {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			m.log.Error(logMsg, "job", id, "err", err)
		}
		return j, false
	}
	return j, true
}

// startParent moves the QUEUED parent job j to EXECUTING. It returns the
// job as stored and false when j is not to be carried on here: aborted or
// started meanwhile, or a store failure (the dispatch is retried).
func (m *Manager) startParent(ctx context.Context, j store.Job) (store.Job, bool) {
	unlock := m.lockJob(j.ID)
	now := m.cfg.Now()
	j, err := m.st.UpdateJob(ctx, j.ID, func(j *store.Job) error {
		if j.Phase != store.PhaseQueued {
			return errNoChange
		}
		j.Phase, j.StartedAt = store.PhaseExecuting, now
		return nil
	})
	unlock()
	switch {
	case errors.Is(err, errNoChange):
		return j, false // aborted meanwhile, or started by another call
	case err != nil:
		m.retryDispatch(j.ID, err)
		return j, false
	}
	m.phaseChanged(j)
	m.armExecDeadline(j)
	return j, true
}

// runChildren runs the children of the parent job id that are PENDING or
// HELD and ready (ready(i) for kids[i]). A store failure retries the
// parent's dispatch and stops there.
func (m *Manager) runChildren(ctx context.Context, id string, kids []store.Job, ready func(i int) bool) {
	for i, k := range kids {
		if (k.Phase != store.PhasePending && k.Phase != store.PhaseHeld) || !ready(i) {
			continue
		}
		if _, err := m.Run(ctx, k.ID); err != nil {
			var pe *PhaseError
			if errors.As(err, &pe) || errors.Is(err, store.ErrNotFound) {
				continue // it moved on meanwhile
			}
			m.retryDispatch(id, err)
			return
		}
	}
}

// abortUnfinished aborts the children in kids that have not ended, for
// why; logMsg names a failure other than a child that ended meanwhile.
func (m *Manager) abortUnfinished(kids []store.Job, why, logMsg string) {
	for _, k := range kids {
		if k.Phase.Final() {
			continue
		}
		if _, err := m.Abort(k.ID, why); err != nil {
			var pe *PhaseError
			if !errors.As(err, &pe) {
				m.log.Error(logMsg, "job", k.ID, "err", err)
			}
		}
	}
}

// endParent ends the EXECUTING parent job id whose n children have all
// ended, the last at end (zero: now): COMPLETED when none failed, else
// ERROR with the failures in its summary.
func (m *Manager) endParent(ctx context.Context, id string, kind parentKind, n int, failed []string, end time.Time) {
	if end.IsZero() {
		end = m.cfg.Now()
	}
	unlock := m.lockJob(id)
	j, err := m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.Phase != store.PhaseExecuting {
			return errNoChange
		}
		j.EndedAt = end
		switch {
		case n == 0:
			j.Phase, j.ErrorType, j.ErrorSummary = store.PhaseError, "fatal", kind.none
		case len(failed) == 0:
			j.Phase = store.PhaseCompleted
		default:
			j.Phase, j.ErrorType = store.PhaseError, "fatal"
			j.ErrorSummary = summarize(fmt.Sprintf("%d of %d %s did not complete: %s",
				len(failed), n, kind.children, strings.Join(failed, "; ")))
		}
		return nil
	})
	if err == nil {
		m.stopTimer("exec:" + id)
		m.phaseChanged(j)
		m.log.Info(kind.ended, "job", id, "phase", j.Phase, kind.children, n, "failed", len(failed))
	}
	unlock()
	if err != nil && !errors.Is(err, errNoChange) {
		m.log.Error(kind.failEnd, "job", id, "err", err)
	}
}
