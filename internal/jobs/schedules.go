package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Schedules (docs/jobs.md, "Scheduling"): a saved definition may run by
// itself, at a time and then every Every. The schedules are in the store;
// the node holding the timer lease (lease.go) looks for due firings each
// time it renews the lease (every TimerLeaseRenew, 5 s by default: the
// resolution of a schedule), so a schedule survives restarts and, in a
// cluster, fires on one node. A firing is won with a compare-and-set of
// the schedule's next time (store.ScheduleStore.AdvanceSchedule; a
// one-time schedule is deleted instead), so it runs once even when the
// lease changes hands meanwhile. Firings missed while no node ran the
// timers are not caught up one by one: the next firing is the first
// period boundary after now. A firing that would leave more than
// MaxRunning of the definition's jobs unfinished is skipped (logged).

// DefaultMinScheduleEvery is Config.MinScheduleEvery's default.
const DefaultMinScheduleEvery = time.Minute

// DefinitionRunner creates and runs a job from the newest version of the
// schedule's definition, owned by its owner, and returns the job's id. The
// UWS binding provides it (it reads definitions' specs).
type DefinitionRunner func(ctx context.Context, s store.Schedule) (string, error)

// SetDefinitionRunner sets what starts the jobs of schedules; until it is
// set no schedule fires.
func (m *Manager) SetDefinitionRunner(f DefinitionRunner) { m.runner.Store(&f) }

// ScheduleError is a schedule the settings refuse (UWS binding: 400).
type ScheduleError struct{ Msg string }

func (e *ScheduleError) Error() string { return e.Msg }

// SaveSchedule stores (or replaces) a definition's schedule: Every 0
// (once) or at least Config.MinScheduleEvery, MaxRunning at least 1
// (0: 1), Next zero for now.
func (m *Manager) SaveSchedule(ctx context.Context, s store.Schedule) (store.Schedule, error) {
	if s.Every != 0 && s.Every < m.cfg.MinScheduleEvery {
		return s, &ScheduleError{fmt.Sprintf("every must be 0 (once) or at least %s", m.cfg.MinScheduleEvery)}
	}
	if s.MaxRunning == 0 {
		s.MaxRunning = 1
	}
	if s.MaxRunning < 0 || s.MaxRunning > MaxScheduleRunning {
		return s, &ScheduleError{fmt.Sprintf("maxRunning must be 1 to %d", MaxScheduleRunning)}
	}
	if s.Next.IsZero() {
		s.Next = m.cfg.Now()
	}
	s.CreatedAt = m.cfg.Now()
	if err := m.st.PutSchedule(ctx, s); err != nil {
		return s, err
	}
	m.log.Info("jobs: schedule saved", "definition", s.Definition, "every", s.Every, "next", s.Next, "max_running", s.MaxRunning)
	return m.st.Schedule(ctx, s.Definition)
}

// MaxScheduleRunning bounds a schedule's MaxRunning.
const MaxScheduleRunning = 100

// Schedule reads a definition's schedule (store.ErrNotFound if none).
func (m *Manager) Schedule(ctx context.Context, definition string) (store.Schedule, error) {
	return m.st.Schedule(ctx, definition)
}

// DeleteSchedule deletes a definition's schedule (store.ErrNotFound if
// none).
func (m *Manager) DeleteSchedule(ctx context.Context, definition string) error {
	return m.st.DeleteSchedule(ctx, definition)
}

// nextFiring is the first firing of s after now: the next period
// boundary, or zero for a one-time schedule.
func nextFiring(s store.Schedule, now time.Time) time.Time {
	if s.Every <= 0 {
		return time.Time{}
	}
	missed := now.Sub(s.Next) / s.Every
	return s.Next.Add((missed + 1) * s.Every)
}

// fireSchedules starts the firings that are due. The lease loop calls it
// while this node holds the timer lease.
func (m *Manager) fireSchedules(ctx context.Context) {
	p := m.runner.Load()
	if p == nil {
		return
	}
	ss, err := m.st.Schedules(ctx)
	if err != nil {
		m.log.Warn("jobs: read the schedules", "err", err)
		return
	}
	now := m.cfg.Now()
	for _, s := range ss {
		if s.Next.After(now) {
			continue
		}
		if !m.winFiring(ctx, s, now) {
			continue
		}
		active, err := m.st.Jobs(ctx, store.JobFilter{Definition: s.Definition,
			Phases: []store.Phase{store.PhasePending, store.PhaseQueued, store.PhaseExecuting}, Limit: s.MaxRunning + 1})
		if err != nil {
			m.log.Warn("jobs: scheduled firing skipped: cannot count its running jobs", "definition", s.Definition, "err", err)
			continue
		}
		if len(active) >= s.MaxRunning {
			m.log.Warn("jobs: scheduled firing skipped: as many of its jobs as allowed are unfinished",
				"definition", s.Definition, "unfinished", len(active), "max_running", s.MaxRunning)
			continue
		}
		id, err := (*p)(ctx, s)
		if err != nil {
			m.log.Warn("jobs: scheduled firing failed", "definition", s.Definition, "err", err)
			continue
		}
		m.log.Info("jobs: scheduled job started", "definition", s.Definition, "job", id)
	}
}

// winFiring claims the due firing of s for this node: it moves the
// schedule to its next firing (or deletes a one-time schedule) if no other
// node did first.
func (m *Manager) winFiring(ctx context.Context, s store.Schedule, now time.Time) bool {
	next := nextFiring(s, now)
	if next.IsZero() {
		err := m.st.DeleteSchedule(ctx, s.Definition)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			m.log.Warn("jobs: end a one-time schedule", "definition", s.Definition, "err", err)
		}
		return err == nil
	}
	won, err := m.st.AdvanceSchedule(ctx, s.Definition, s.Next, next)
	if err != nil {
		m.log.Warn("jobs: advance a schedule", "definition", s.Definition, "err", err)
	}
	return won
}
