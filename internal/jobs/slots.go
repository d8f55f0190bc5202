package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Targets and slots (docs/jobs.md, "Targets and fates" and "Runs at once
// per agent").
//
// At RUN every target gets a run whose state is its fate from then on:
// queued (connected, waits for a slot), waiting (not connected: waits for
// the agent up to the lost grace period), skipped or rejected (never sent,
// with the reason in Run.Error). A run becomes dispatched only in
// sendQueued, called by pump, which counts the agent's runs of the action
// that hold a slot (dispatched or running, over every job) against the
// action's declared concurrency and sends the queued ones, oldest RUN
// first, while slots are free. pump runs whenever a slot may have freed
// or a run was queued: after a dispatch, a result, a lost run, and when
// the agent connects (its waiting runs are queued then).
//
// Lock order: an agent's slot lock (lockAgent), then a job's lock. pump
// takes job locks; it is never called with a job's lock held.

// planTargets returns the runs a QUEUED job's dispatch records for the
// targets that have none yet (have): for ids, each id; for a label
// selector, every agent known (stored) or connected that matches.
func (m *Manager) planTargets(j store.Job, known []store.Agent, online []Agent, have map[string]bool) []store.Run {
	sel, _ := parseTargets(j.Targets)
	onlineByID := make(map[string]*Agent, len(online))
	for i := range online {
		onlineByID[online[i].ID] = &online[i]
	}
	knownByID := make(map[string]store.Agent, len(known))
	for _, a := range known {
		knownByID[a.ID] = a
	}
	var ids []string
	if len(sel.ids) > 0 {
		ids = sel.ids
	} else {
		for _, a := range known {
			if sel.matches(a.ID, a.Labels) {
				ids = append(ids, a.ID)
			}
		}
		for _, a := range online {
			if _, stored := knownByID[a.ID]; !stored && sel.matches(a.ID, a.Labels) {
				ids = append(ids, a.ID)
			}
		}
	}
	now := m.cfg.Now()
	var out []store.Run
	for _, id := range ids {
		if have[id] {
			continue
		}
		have[id] = true
		r := store.Run{JobID: j.ID, AgentID: id, ExitCode: -1}
		a, connected := onlineByID[id]
		var decl *jobproto.Action
		if connected {
			decl = a.Action(j.Action)
		} else if k, ok := knownByID[id]; ok {
			var acts []jobproto.Action
			if json.Unmarshal(k.Actions, &acts) == nil {
				if i := slices.IndexFunc(acts, func(x jobproto.Action) bool { return x.Name == j.Action }); i >= 0 {
					decl = &acts[i]
				}
			}
		}
		offers := decl != nil
		if offers {
			_, err := decl.CheckParams(j.Params)
			offers = err == nil
		}
		switch {
		case !offers:
			// A named agent that cannot run it fails the job; an agent a
			// selector matches but that offers something else was never
			// meant to run it.
			r.State, r.EndedAt = store.RunRejected, now
			if len(sel.ids) == 0 {
				r.State = store.RunSkipped
			}
			r.Error = fmt.Sprintf("agent %s does not offer action %q with these parameters", id, j.Action)
		case connected:
			r.State = store.RunQueued
		case j.Require == store.RequireAvailable:
			r.State, r.EndedAt = store.RunSkipped, now
			r.Error = fmt.Sprintf("agent %s was not connected at RUN (REQUIRE=%s)", id, store.RequireAvailable)
		default:
			r.State = store.RunWaiting
		}
		out = append(out, r)
	}
	return out
}

// lockAgent serialises the slot decisions of one agent (pump), and the
// recording of its connections with ForgetAgent; call the returned
// function to unlock.
func (m *Manager) lockAgent(id string) func() { return m.lockIn(m.agentLocks, id) }

// connectedAgent returns the agent if it is connected (to any node).
func (m *Manager) connectedAgent(id string) (Agent, bool) {
	for _, a := range m.agentsOf().Connected() {
		if a.ID == id {
			return a, true
		}
	}
	return Agent{}, false
}

// pump sends the agent's queued runs, oldest RUN first (ties by job id),
// while the action of each has a free slot on the agent: its runs of that
// action dispatched or running in unfinished jobs are fewer than the
// action's declared concurrency. (A run of an aborted job frees its slot
// at the abort, not when the agent reports it killed: an agent that never
// reports it must not stall its queue.) A run whose action the agent no
// longer declares is sent alone (the agent rejects it).
func (m *Manager) pump(agentID string) { m.pumpTry(agentID, 0) }

// pumpTry is pump's tries-th attempt (see holdSlotLease).
func (m *Manager) pumpTry(agentID string, tries int) {
	a, ok := m.connectedAgent(agentID)
	if !ok {
		return // its runs wait for it (or are lost after the grace period)
	}
	unlock := m.lockAgent(agentID)
	defer unlock()
	ctx, cancel := bgCtx()
	defer cancel()
	if m.cfg.Bus != nil && len(m.cfg.Bus.Members()) > 1 {
		// Nodes sharing the store decide an agent's slots one at a time.
		// A node alone needs only lockAgent: two store writes per decision
		// made RUN of a job on 100 agents 4-5 times slower (bench jobs).
		// A node that joins takes the lease from then on; /readyz keeps
		// clients away until the membership has settled.
		release, ok := m.holdSlotLease(ctx, agentID, tries)
		if !ok {
			return
		}
		defer release()
	}
	runs, err := m.st.AgentRuns(ctx, agentID)
	if err != nil {
		m.log.Error("jobs: queued runs of an agent", "agent", agentID, "err", err)
		return
	}
	busy := map[string]int{} // action → runs holding a slot
	var queued []store.Job
	for _, r := range runs {
		if r.State != store.RunQueued && r.State != store.RunDispatched && r.State != store.RunRunning {
			continue
		}
		j, err := m.st.Job(ctx, r.JobID)
		if err != nil {
			continue
		}
		if r.State == store.RunQueued {
			if j.Phase == store.PhaseExecuting {
				queued = append(queued, j)
			}
			continue
		}
		if !j.Phase.Final() { // an ended job's runs were told to stop
			busy[j.Action]++
		}
	}
	sort.SliceStable(queued, func(i, k int) bool {
		if !queued[i].StartedAt.Equal(queued[k].StartedAt) {
			return queued[i].StartedAt.Before(queued[k].StartedAt)
		}
		return queued[i].ID < queued[k].ID
	})
	for _, j := range queued {
		limit := jobproto.DefaultMaxConcurrent
		if act := a.Action(j.Action); act != nil {
			limit = act.Concurrency()
		}
		if busy[j.Action] >= limit {
			continue
		}
		if m.sendQueued(ctx, j.ID, agentID) {
			busy[j.Action]++
		}
	}
}

// sendQueued moves the job's queued run on the agent to dispatched and
// sends it, if the run is still queued and the job EXECUTING; it reports
// whether it did.
func (m *Manager) sendQueued(ctx context.Context, jobID, agentID string) bool {
	unlock := m.lockJob(jobID)
	defer unlock()
	j, err := m.st.Job(ctx, jobID)
	if err != nil || j.Phase != store.PhaseExecuting {
		return false
	}
	r, err := m.st.Run(ctx, jobID, agentID)
	if err != nil || r.State != store.RunQueued {
		return false
	}
	r.State = store.RunDispatched
	if err := m.st.PutRun(ctx, r); err != nil {
		m.log.Error("jobs: dispatch a queued run", "job", jobID, "agent", agentID, "err", err)
		return false
	}
	m.runsChanged(jobID)
	msg := jobproto.Run{Type: jobproto.TypeRun, Job: jobID, Action: j.Action, Params: j.Params}
	if j.ExecDuration > 0 {
		msg.Timeout = jobproto.Duration(max(j.StartedAt.Add(j.ExecDuration).Sub(m.cfg.Now()), time.Second))
	}
	// The run must be started (or reported) within the grace period,
	// whether the agent stays connected or not. SendRun only queues.
	m.armLost(jobID, agentID)
	m.agentsOf().SendRun(agentID, msg)
	return true
}

// admitWaiting queues the runs that waited for the agent to connect, and
// sends what its slots allow.
func (m *Manager) admitWaiting(agentID string) {
	ctx, cancel := bgCtx()
	defer cancel()
	runs, err := m.st.AgentRuns(ctx, agentID)
	if err != nil {
		m.log.Error("jobs: waiting runs of an agent", "agent", agentID, "err", err)
		return
	}
	for _, r := range runs {
		if r.State != store.RunWaiting {
			continue
		}
		unlock := m.lockJob(r.JobID)
		cur, err := m.st.Run(ctx, r.JobID, agentID)
		if err == nil && cur.State == store.RunWaiting {
			cur.State = store.RunQueued
			if err = m.st.PutRun(ctx, cur); err == nil {
				m.stopTimer("lost:" + r.JobID + "/" + agentID)
				m.runsChanged(r.JobID)
			}
		}
		unlock()
		if err != nil {
			m.log.Error("jobs: queue a waiting run", "job", r.JobID, "agent", agentID, "err", err)
		}
	}
	m.pump(agentID)
}

// SlotLeaseName is the store lease that nodes sharing a store take to
// decide an agent's slots (pump), one node at a time: the per-agent lock
// (lockAgent) only orders one node's decisions.
func SlotLeaseName(agentID string) string { return "jobs.slots/" + agentID }

// Slot lease timing: a decision takes a few store calls, so the lease
// lasts slotLeaseTTL in case its node dies holding it, and a node that
// finds it taken tries again every slotLeaseRetry, up to slotLeaseTries
// times (the holder's decision may have read the agent's runs before this
// node queued one).
const (
	slotLeaseTTL   = 10 * time.Second
	slotLeaseRetry = 50 * time.Millisecond
	slotLeaseTries = 400
)

// holdSlotLease takes the agent's slot lease (SlotLeaseName) and returns
// its release. When another node holds it, or the store cannot be asked,
// it arranges another attempt of pump later (the tries-th retry; after
// slotLeaseTries it gives up and logs: the next result, connection or
// lost-grace timer of the agent pumps again) and reports false.
func (m *Manager) holdSlotLease(ctx context.Context, agentID string, tries int) (func(), bool) {
	name := SlotLeaseName(agentID)
	held, _, err := m.st.AcquireLease(ctx, name, m.holder, slotLeaseTTL)
	if err == nil && held {
		return func() {
			if err := m.st.ReleaseLease(ctx, name, m.holder); err != nil {
				m.log.Warn("jobs: release an agent's slot lease", "agent", agentID, "err", err)
			}
		}, true
	}
	if tries >= slotLeaseTries {
		m.log.Error("jobs: could not take an agent's slot lease; its queued runs wait for its next event", "agent", agentID, "err", err)
		return nil, false
	}
	time.AfterFunc(slotLeaseRetry, func() { m.goBackground(func() { m.pumpTry(agentID, tries+1) }) })
	return nil, false
}

// pumpLater runs pump in the background (from a path that holds, or is
// called under, something pump must not wait for).
func (m *Manager) pumpLater(agentID string) { m.goBackground(func() { m.pump(agentID) }) }
