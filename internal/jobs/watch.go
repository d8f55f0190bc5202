package jobs

import (
	"context"
	"time"

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

// WaitPhase blocks until the job leaves phase j.Phase, the wait ends or
// ctx ends (ok false). It returns the job's new state when a phase change
// brought it, else nil (the caller reads the job again). It releases w
// (and the watchers it takes after it); while it blocks, the request
// counts in Waiting.
func (m *Manager) WaitPhase(ctx context.Context, j store.Job, w *Watcher, wait time.Duration) (woken *store.Job, ok bool) {
	defer func() { m.Unwatch(j.ID, w) }()
	t := time.NewTimer(wait)
	defer t.Stop()
	m.addWaiting(j.ID, 1)
	defer m.addWaiting(j.ID, -1)
	for {
		select {
		case <-w.done:
		case <-t.C:
			return nil, true
		case <-ctx.Done():
			return nil, false
		}
		if !w.known {
			return nil, true
		}
		if w.job.Phase != j.Phase {
			return &w.job, true
		}
		m.Unwatch(j.ID, w)
		w = m.Watch(j.ID)
	}
}

// RunsVersion counts the changes of a job's runs: a rendering of the job
// is current while its UpdatedAt and this count are the same.
func (m *Manager) RunsVersion(id string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runGen[id]
}

// Watched returns how many jobs have a watcher (requests waiting for
// their next phase change).
func (m *Manager) Watched() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.watchers)
}
