package jobs

import (
	"sync/atomic"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// OutcomePhases are the phases a job ends in that Outcomes counts (not
// ARCHIVED: that is a job's destruction after one of these).
var OutcomePhases = []store.Phase{store.PhaseCompleted, store.PhaseError, store.PhaseAborted}

// outcomeCounts counts the jobs this node ended, by final phase.
type outcomeCounts struct {
	completed, errored, aborted atomic.Uint64
}

// count records a job that this node moved to phase p (a no-op for a
// phase that is not an outcome).
func (o *outcomeCounts) count(p store.Phase) {
	switch p {
	case store.PhaseCompleted:
		o.completed.Add(1)
	case store.PhaseError:
		o.errored.Add(1)
	case store.PhaseAborted:
		o.aborted.Add(1)
	}
}

// Outcomes returns how many jobs this node ended, by final phase (every
// one of OutcomePhases, zero included). A job ends on the one node that
// records its last change, so a cluster's totals are the sums over its
// nodes (switchboard_jobs_ended_total).
func (m *Manager) Outcomes() map[store.Phase]uint64 {
	return map[store.Phase]uint64{
		store.PhaseCompleted: m.outcomes.completed.Load(),
		store.PhaseError:     m.outcomes.errored.Load(),
		store.PhaseAborted:   m.outcomes.aborted.Load(),
	}
}
