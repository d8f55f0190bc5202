package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// TimerLease is the name of the store lease (store.LeaseStore) whose
// holder runs the job timers: of the managers sharing a store, only the
// holder arms and fires them.
const TimerLease = "jobs.timers"

// Defaults of Config's lease settings.
const (
	DefaultTimerLeaseTTL = 15 * time.Second
)

// The lease on the job timers: the node that holds TimerLease runs every
// job's timers (execution deadline, destruction, lost grace periods,
// dispatch retry); the others arm none. Start asks for it once, and a
// loop then renews it (or asks for it) every TimerLeaseRenew:
//   - gaining it (at Start on a node of one, whose holder name is its
//     node id and so takes back its own lease at once after a restart)
//     loads the due timers of every unfinished job from the store;
//   - losing it (refused at a renewal, or not renewed in time because the
//     store did not answer) stops every timer at once;
//   - Stop stops the timers and releases it, so another node takes over
//     at its next ask instead of after the ttl.
//
// The holder counts its lease as lasting TimerLeaseTTL from the moment it
// sent the AcquireLease that granted it, on its own monotonic clock: the
// store measures from a later instant, so the holder's view ends first,
// whatever the clocks of the nodes and the database say. A timer that
// fires after that view ended does not run and ends the lease (the next
// renewal that succeeds counts as gaining it again, and reloads).
//
// A timer that fired just before the lease was lost may still be running
// when another node's fires the same timer: each transition re-reads the
// job under its lock in a store transaction, so the second finds the work
// done (Abort of an ABORTED job, destruction of an ARCHIVED one, a run
// already final) and changes nothing.

// holdLease asks the store for the timer lease (a renewal while it is
// held) and acts on the answer: gaining it loads the timers, losing it
// stops them. It returns the store's error, or loadTimers'.
func (m *Manager) holdLease(ctx context.Context) error {
	asked := time.Now()
	actx, cancel := context.WithTimeout(ctx, m.cfg.TimerLeaseRenew)
	held, _, err := m.st.AcquireLease(actx, TimerLease, m.holder, m.cfg.TimerLeaseTTL)
	cancel()

	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return err
	}
	was := m.leaseHeld
	if was && !asked.Before(m.leaseValid) {
		// Our view of the lease ended before this ask: whatever the
		// answer, another node may have run the timers meanwhile.
		m.dropLeaseLocked()
		was = false
	}
	switch {
	case err == nil && held:
		m.leaseHeld, m.leaseValid = true, asked.Add(m.cfg.TimerLeaseTTL)
	case err != nil && was && time.Now().Before(m.leaseValid):
		// Keep it until it runs out: the next renewal may get through.
	default:
		m.dropLeaseLocked()
	}
	gained, lost := !was && m.leaseHeld, was && !m.leaseHeld
	m.mu.Unlock()

	switch {
	case lost:
		m.log.Warn("jobs: lost the timer lease; timers stopped", "holder", m.holder, "err", err)
	case gained:
		m.log.Info("jobs: holding the timer lease; loading timers", "holder", m.holder)
		if lerr := m.loadTimers(ctx); lerr != nil {
			// Let go, so that this node or another tries again from
			// the start rather than run with timers missing.
			m.mu.Lock()
			m.dropLeaseLocked()
			m.mu.Unlock()
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.TimerLeaseRenew)
			m.st.ReleaseLease(rctx, TimerLease, m.holder)
			rcancel()
			return lerr
		}
	}
	return err
}

// dropLeaseLocked forgets the lease and stops every timer. Call it with
// m.mu held.
func (m *Manager) dropLeaseLocked() {
	m.leaseHeld = false
	for k, t := range m.timers {
		t.Stop()
		delete(m.timers, k)
	}
}

// leaseValidLocked reports whether this node holds the timer lease now.
// Call it with m.mu held.
func (m *Manager) leaseValidLocked() bool {
	return m.leaseHeld && time.Now().Before(m.leaseValid)
}

// HoldsTimerLease reports whether this manager holds the timer lease (and
// so runs the job timers).
func (m *Manager) HoldsTimerLease() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leaseValidLocked()
}

// leaseLoop renews the lease, or asks for it, every TimerLeaseRenew until
// ctx ends; it closes done when it returns.
func (m *Manager) leaseLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(m.cfg.TimerLeaseRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.holdLease(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("jobs: timer lease", "holder", m.holder, "err", err)
		}
		if m.HoldsTimerLease() && m.scheduling.CompareAndSwap(false, true) {
			// Off the loop, so that starting jobs never delays a
			// renewal; one scan at a time (schedules.go).
			m.goBackground(func() {
				defer m.scheduling.Store(false)
				sctx, cancel := bgCtx()
				defer cancel()
				m.fireSchedules(sctx)
			})
		}
	}
}

// stopLease waits for the lease loop (which Stop ended) and releases the
// lease, within ctx; Stop calls it once the timers have been stopped and
// their work has finished.
func (m *Manager) stopLease(ctx context.Context) error {
	if m.leaseCancel == nil {
		return nil // never started
	}
	select {
	case <-m.leaseDone:
	case <-ctx.Done():
		return fmt.Errorf("jobs: stop: %w", ctx.Err())
	}
	if err := m.st.ReleaseLease(ctx, TimerLease, m.holder); err != nil && !errors.Is(err, context.Canceled) {
		// It runs out by itself within the ttl.
		m.log.Warn("jobs: release the timer lease", "holder", m.holder, "err", err)
	}
	return nil
}

// loadTimers arms the timers of every unfinished job from the store, as a
// node that just gained the timer lease (or a restarted one) must: every
// run not final gets the lost grace period to be reported by its agent
// again, execution and destruction deadlines are set again, and QUEUED
// jobs are dispatched after the grace period.
func (m *Manager) loadTimers(ctx context.Context) error {
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		return err
	}
	for _, j := range active {
		m.armDestruction(j)
		switch j.Phase {
		case store.PhaseQueued:
			// Give the agents the grace period to reconnect first.
			m.setTimer("dispatch:"+j.ID, m.cfg.LostGrace, func() { m.dispatch(j.ID) })
		case store.PhaseExecuting:
			m.armExecDeadline(j)
			if len(j.Matrix) > 0 {
				// Its children may all have ended, or some be left
				// PENDING, while no node ran the timers.
				m.goBackground(func() { m.finishMatrixIfDone(j.ID) })
				continue
			}
			if len(j.Steps) > 0 {
				m.goBackground(func() { m.advanceSteps(j.ID) })
				continue
			}
			runs, err := m.st.Runs(ctx, j.ID)
			if err != nil {
				return err
			}
			for _, r := range runs {
				if !r.State.Final() {
					m.armLost(r.JobID, r.AgentID)
				}
			}
			// A crash between the last run's result and the job's
			// phase change leaves a finished EXECUTING job.
			m.goBackground(func() { m.finishIfDone(j.ID) })
		}
	}
	m.log.Info("jobs: timers loaded", "active_jobs", len(active))
	return nil
}
