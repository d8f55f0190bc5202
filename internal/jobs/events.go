package jobs

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Job events: what the managers sharing a store tell each other when a
// job changes, over the cluster bus. The store is the truth; an event
// only wakes: WAIT requests re-read the job, the holder of the timer
// lease re-arms the job's timers from the store.
//
// Every change goes through announce, which publishes its event and
// applies it here through apply, the same function that applies the
// events of other nodes (the bus does not echo a node's own messages).
// So a node of one runs the path a cluster runs.

// EventSubject returns the subject of job events under prefix:
// <prefix>.job.changed.
func EventSubject(prefix string) string { return prefix + ".job.changed" }

// What an Event reports.
const (
	ChangePhase   = "phase"   // the job entered Phase
	ChangeDeleted = "deleted" // the job is gone
	// ChangeTimers: the job was created, or its destruction time or
	// execution duration changed; its phase did not.
	ChangeTimers = "timers"
)

// Event is a job event, as JSON on EventSubject.
type Event struct {
	Job    string      `json:"job"`
	Change string      `json:"change"`          // ChangePhase, ChangeDeleted or ChangeTimers
	Phase  store.Phase `json:"phase,omitempty"` // the phase after the change; "" when deleted
	// Revision is the job's UpdatedAt after the change, in Unix
	// microseconds (0 when deleted): which write the event reports.
	Revision int64  `json:"revision,omitempty"`
	Node     string `json:"node"` // who changed it
}

// phaseChanged announces that j entered a new phase.
func (m *Manager) phaseChanged(j store.Job) {
	m.outcomes.count(j.Phase)
	m.announce(Event{Job: j.ID, Change: ChangePhase, Phase: j.Phase, Revision: j.UpdatedAt.UnixMicro()}, &j)
}

// timersChanged announces a change of j that moves its timers, not its
// phase.
func (m *Manager) timersChanged(j store.Job) {
	m.announce(Event{Job: j.ID, Change: ChangeTimers, Phase: j.Phase, Revision: j.UpdatedAt.UnixMicro()}, &j)
}

// deleted announces that the job id is gone.
func (m *Manager) deleted(id string) { m.announce(Event{Job: id, Change: ChangeDeleted}, nil) }

// announce publishes ev to the other nodes and applies it here. j is the
// job after the change. Publish does not wait for the other nodes (a
// guarantee of every Bus), so it may be called under a job's lock.
func (m *Manager) announce(ev Event, j *store.Job) {
	ev.Node = m.cfg.NodeID
	if m.cfg.Bus != nil {
		body, _ := json.Marshal(ev)
		if err := m.cfg.Bus.Publish(&cluster.Msg{Subject: m.eventSubject, Data: body}); err != nil && !errors.Is(err, cluster.ErrClosed) {
			m.log.Warn("jobs: publish job event", "job", ev.Job, "change", ev.Change, "err", err)
		}
	}
	m.apply(ev, j, true)
}

// receive applies another node's event.
func (m *Manager) receive(msg *cluster.Msg) {
	var ev Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Job == "" {
		m.log.Warn("jobs: a job event that does not parse", "err", err, "bytes", len(msg.Data))
		return
	}
	m.apply(ev, nil, false)
}

// apply acts on an event, this node's (local; j is the job after the
// change, nil for a deletion) or another's (j nil): phase changes and
// deletions wake the job's WAIT requests; another node's change re-arms
// the job's timers here if this node runs them (its own changes armed
// them already).
func (m *Manager) apply(ev Event, j *store.Job, local bool) {
	if ev.Change != ChangeTimers {
		m.wake(ev.Job, j)
	}
	switch {
	case ev.Change == ChangeDeleted || ev.Phase == store.PhaseArchived:
		m.dropLogs(ev.Job)
	case ev.Change == ChangePhase && ev.Phase.Final():
		m.goBackground(func() { m.endLogs(ev.Job, ev.Phase, local) })
	}
	if local && j != nil && j.Parent != "" && ev.Change == ChangePhase && (ev.Phase.Final() || ev.Phase == store.PhaseExecuting) {
		// The node that ended a matrix job's child sees whether it was
		// the last one (matrix.go); a test's step that started or ended
		// may let the next start (steps.go).
		phase := ev.Phase
		m.goBackground(func() { m.childChanged(j.Parent, phase) })
	}
	if !local && m.HoldsTimerLease() {
		m.goBackground(func() { m.rearm(ev.Job) })
	}
}

// rearm sets a job's timers from the store, after another node changed
// it.
func (m *Manager) rearm(id string) {
	unlock := m.lockJob(id)
	defer unlock()
	ctx, cancel := bgCtx()
	defer cancel()
	j, err := m.st.Job(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		m.stopJobTimers(id)
		return
	}
	if err != nil {
		m.log.Error("jobs: re-arm timers after another node's change", "job", id, "err", err)
		return
	}
	m.armDestruction(j)
	m.armExecDeadline(j)
	if j.Phase != store.PhaseExecuting {
		return
	}
	// Runs dispatched elsewhere must be started, and runs whose agent is
	// gone reported, within the grace period, as if dispatched here.
	runs, err := m.st.Runs(ctx, id)
	if err != nil {
		m.log.Error("jobs: re-arm timers after another node's change", "job", id, "err", err)
		return
	}
	agents := m.agentsOf()
	for _, r := range runs {
		if _, running := agents.Status(r.AgentID, id); !r.State.Final() && !running {
			m.armLostIfUnarmed(id, r.AgentID)
		}
	}
}

// subscribe starts receiving the other nodes' job events, if there is a
// bus.
func (m *Manager) subscribe() error {
	if m.cfg.Bus == nil {
		return nil
	}
	sub, err := m.cfg.Bus.Subscribe(m.eventSubject, m.receive)
	if err != nil {
		return fmt.Errorf("jobs: subscribe to job events: %w", err)
	}
	m.events = sub
	return nil
}
