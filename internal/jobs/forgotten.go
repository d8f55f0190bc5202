package jobs

import (
	"fmt"
	"slices"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// AgentForgotRuns marks lost at once the runs an agent started (RUNNING)
// that its hello lists neither as running nor among the results it holds:
// the agent restarted without them (its state directory was lost, or it
// stopped before the run wrote anything), so waiting the lost grace period
// for a report that cannot come only delays the job. Call it for a hello
// with ReportsInterrupted set, before the welcome; an agent without it
// may still deliver such a run's result, and gets the grace period.
func (m *Manager) AgentForgotRuns(agentID string, running, results []string) {
	ctx, cancel := bgCtx()
	defer cancel()
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		m.log.Error("jobs: runs an agent forgot", "agent", agentID, "err", err)
		return
	}
	for _, j := range active {
		if j.Phase != store.PhaseExecuting || !slices.Contains(j.Agents, agentID) ||
			slices.Contains(running, j.ID) || slices.Contains(results, j.ID) {
			continue
		}
		unlock := m.lockJob(j.ID)
		r, err := m.st.Run(ctx, j.ID, agentID)
		if err != nil || r.State != store.RunRunning {
			unlock()
			continue // not started there (re-sent by ResendRuns), or ended
		}
		r.State, r.EndedAt = store.RunLost, m.cfg.Now()
		r.Error = fmt.Sprintf("agent %s came back without the run: it restarted and holds neither the run nor its result", agentID)
		err = m.st.PutRun(ctx, r)
		unlock()
		if err != nil {
			m.log.Error("jobs: mark run lost", "job", j.ID, "agent", agentID, "err", err)
			continue
		}
		m.stopTimer("lost:" + j.ID + "/" + agentID)
		m.log.Warn("jobs: run lost: its agent came back without it", "job", j.ID, "agent", agentID)
		m.runsChanged(j.ID)
		m.finishIfDone(j.ID)
	}
}
