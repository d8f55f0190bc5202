package jobs

import (
	"switchboard/internal/store"
)

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
