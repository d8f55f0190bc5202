package jobs

import (
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// setTimer (re)arms the timer named key to run f after d, if this node
// holds the timer lease (else the holder runs it: see lease.go). A timer
// that fires after the lease has run out does not run f, and drops the
// lease.
func (m *Manager) setTimer(key string, d time.Duration, f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped || !m.leaseValidLocked() {
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
		if !m.leaseValidLocked() {
			m.dropLeaseLocked()
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

// stopJobTimers disarms every timer of a job.
func (m *Manager) stopJobTimers(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, t := range m.timers {
		if _, rest, ok := strings.Cut(k, ":"); ok && (rest == id || strings.HasPrefix(rest, id+"/")) {
			t.Stop()
			delete(m.timers, k)
		}
	}
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
