package jobs

import (
	"context"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Watcher is closed at a job's next phase change (or deletion), on this
// node or another (events.go); see Watch.
type Watcher struct {
	done chan struct{}
	// job is the job after the change, when known (set before done is
	// closed; a change made on this node): woken requests answer from it
	// without reading the store.
	job   store.Job
	known bool
	refs  int // requests holding it, under Manager.mu
}

// wake wakes the WAIT requests of a job with its new state j, or, when j
// is nil (a deletion, or another node's change), for them to read it
// again. Only apply (events.go) calls it.
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
// brought it, else nil (the caller reads the job again: the wait ended,
// or the job is gone or could not be read). A wake-up without the new
// state (another node's event, which may be late or stale) is checked
// against the store: the wait goes on while the phase there is still
// j.Phase. It releases w (and the watchers it takes after it); while it
// blocks, the request counts in Waiting.
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
		if w.known {
			if w.job.Phase != j.Phase {
				return &w.job, true
			}
			m.Unwatch(j.ID, w)
			w = m.Watch(j.ID)
			continue
		}
		// Watch again before reading, so that no change slips between.
		next := m.Watch(j.ID)
		cur, err := m.st.Job(ctx, j.ID)
		if err != nil || cur.Phase != j.Phase {
			m.Unwatch(j.ID, next)
			switch {
			case ctx.Err() != nil:
				return nil, false
			case err != nil:
				return nil, true
			}
			return &cur, true
		}
		m.Unwatch(j.ID, w)
		w = next
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
