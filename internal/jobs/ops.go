package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// What the UWS binding (uwsapi) asks of the state machine: reads and the
// changes a client may make (WAIT is in watch.go). Changes take the
// job's lock; reads go to the store as they are.

// Config returns the settings, defaults applied.
func (m *Manager) Config() Config { return m.cfg }

// Blobs returns the store of the output files.
func (m *Manager) Blobs() blob.Store { return m.blobs }

// Now returns the current time of Config.Now.
func (m *Manager) Now() time.Time { return m.cfg.Now() }

// Job reads a job (store.ErrNotFound if there is none).
func (m *Manager) Job(ctx context.Context, id string) (store.Job, error) { return m.st.Job(ctx, id) }

// Runs reads a job's runs.
func (m *Manager) Runs(ctx context.Context, id string) ([]store.Run, error) {
	return m.st.Runs(ctx, id)
}

// AgentRun reads the run of a job on an agent (store.ErrNotFound if there
// is none).
func (m *Manager) AgentRun(ctx context.Context, jobID, agentID string) (store.Run, error) {
	return m.st.Run(ctx, jobID, agentID)
}

// Jobs lists jobs.
func (m *Manager) Jobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	return m.st.Jobs(ctx, f)
}

// MaxJobLabels bounds the labels of one job.
const MaxJobLabels = 32

// RequireAll is the REQUIRE value that every target must run (the
// default, stored as "").
const RequireAll = "all"

// Spec is a job as a client asks for it.
type Spec struct {
	Owner, RunID, Action, Targets string
	Params                        map[string]string
	// Destruction is the job's destruction time; zero means
	// Config.DefaultDestruction from now (none if that is negative).
	Destruction  time.Time
	ExecDuration time.Duration
	// Require is which targets must run (REQUIRE): "" or "all", every
	// one; store.RequireAvailable, those connected at RUN.
	Require string
	// Matrix lists the parameters given several values (not also in
	// Params): the job is a matrix job (matrix.go), one child job per
	// combination of the values.
	Matrix []store.MatrixParam
	// Labels tag the job ("key=value" each).
	Labels []string
	// Definition and DefinitionVersion name the saved definition the
	// job is started from ("" and 0: none).
	Definition        string
	DefinitionVersion int
	// Steps, if set, make the job a test of several steps (steps.go):
	// Action, Targets, Params and Matrix are then each step's.
	Steps []StepSpec
}

// Create checks a job's targets, action and parameters against the agents
// known (connected or seen before; a *TargetError if they do not fit),
// stores it PENDING and arms its destruction.
func (m *Manager) Create(ctx context.Context, s Spec) (store.Job, error) {
	now := m.cfg.Now()
	j := store.Job{ID: newJobID(), RunID: s.RunID, Owner: s.Owner, Action: s.Action, Targets: s.Targets,
		Phase: store.PhasePending, CreatedAt: now, Destruction: s.Destruction, ExecDuration: s.ExecDuration,
		Matrix: s.Matrix, Labels: s.Labels, Definition: s.Definition, DefinitionVersion: s.DefinitionVersion}
	for _, l := range s.Labels {
		if !jobproto.ValidLabel(l) {
			return j, &TargetError{"invalid_parameter", fmt.Sprintf("LABEL %q is not a label key=value", Truncate(l, 64))}
		}
	}
	if len(s.Labels) > MaxJobLabels {
		return j, &TargetError{"invalid_parameter", fmt.Sprintf("at most %d LABELs", MaxJobLabels)}
	}
	switch s.Require {
	case "", RequireAll:
	case store.RequireAvailable:
		j.Require = store.RequireAvailable
	default:
		return j, &TargetError{"invalid_parameter", fmt.Sprintf("REQUIRE must be %s or %s", RequireAll, store.RequireAvailable)}
	}
	if j.Destruction.IsZero() && m.cfg.DefaultDestruction > 0 {
		j.Destruction = now.Add(m.cfg.DefaultDestruction)
	}
	agents, err := m.st.Agents(ctx)
	if err != nil {
		return j, err
	}
	if len(s.Steps) > 0 {
		if len(s.Params) > 0 {
			return j, &TargetError{"invalid_parameter", "a test of several steps gives its parameters in each step"}
		}
		return m.createSteps(ctx, j, agents, s.Steps)
	}
	if len(j.Matrix) > 0 {
		return m.createMatrix(ctx, j, agents, s.Params)
	}
	if j.Params, err = resolveAction(agents, j.Targets, j.Action, s.Params); err != nil {
		return j, err
	}
	if err := m.st.CreateJob(ctx, j); err != nil {
		return j, err
	}
	m.armDestruction(j)
	m.timersChanged(j)
	m.log.Info("jobs: job created", "job", j.ID, "action", j.Action, "targets", j.Targets, "owner", j.Owner)
	return j, nil
}

// SetDestruction moves a job's destruction time (a *PhaseError once it
// is ARCHIVED).
func (m *Manager) SetDestruction(ctx context.Context, id string, t time.Time) error {
	unlock := m.lockJob(id)
	j, err := m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.Phase == store.PhaseArchived {
			return &PhaseError{"an ARCHIVED job has no destruction time left to change"}
		}
		j.Destruction = t
		return nil
	})
	unlock()
	if err != nil {
		return err
	}
	m.armDestruction(j)
	m.timersChanged(j)
	return m.forChildren(ctx, j, func(child string) error { return m.SetDestruction(ctx, child, t) })
}

// SetExecutionDuration changes a job's execution duration (a *PhaseError
// once it has ended); an EXECUTING job's deadline moves with it.
func (m *Manager) SetExecutionDuration(ctx context.Context, id string, d time.Duration) error {
	unlock := m.lockJob(id)
	j, err := m.st.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.Phase.Final() {
			return &PhaseError{fmt.Sprintf("a job in phase %s cannot change its execution duration", j.Phase)}
		}
		j.ExecDuration = d
		return nil
	})
	unlock()
	if err != nil {
		return err
	}
	if j.Phase == store.PhaseExecuting {
		m.armExecDeadline(j)
	}
	m.timersChanged(j)
	return m.forChildren(ctx, j, func(child string) error { return m.SetExecutionDuration(ctx, child, d) })
}

// AgentDoc is an agent as the API lists it and the agents topic announces
// it.
type AgentDoc struct {
	ID          string          `json:"id"`
	Connected   bool            `json:"connected"`
	Node        string          `json:"node,omitempty"`
	Labels      []string        `json:"labels"`
	Actions     json.RawMessage `json:"actions"`
	Version     string          `json:"version,omitempty"`
	FirstSeen   time.Time       `json:"firstSeen"`
	LastSeen    time.Time       `json:"lastSeen"`
	RemoteAddr  string          `json:"remoteAddr,omitempty"`
	RunningJobs []string        `json:"runningJobs"`
}

func agentDoc(a store.Agent, running []string) AgentDoc {
	out := AgentDoc{ID: a.ID, Connected: a.Connected, Node: a.Node, Labels: a.Labels, Actions: a.Actions,
		Version: a.Version, FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, RemoteAddr: a.RemoteAddr, RunningJobs: running}
	if out.Labels == nil {
		out.Labels = []string{}
	}
	if len(out.Actions) == 0 {
		out.Actions = json.RawMessage("[]")
	}
	if out.RunningJobs == nil {
		out.RunningJobs = []string{}
	}
	return out
}

// Agents lists the agents known (connected or seen before), each with the
// jobs it has an unfinished run in.
func (m *Manager) Agents(ctx context.Context) ([]AgentDoc, error) {
	agents, err := m.st.Agents(ctx)
	if err != nil {
		return nil, err
	}
	running, err := m.runningByAgent(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]AgentDoc, 0, len(agents))
	for _, a := range agents {
		out = append(out, agentDoc(a, running[a.ID]))
	}
	return out, nil
}

// runningByAgent maps agent ids to the jobs with an unfinished run there.
func (m *Manager) runningByAgent(ctx context.Context) (map[string][]string, error) {
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, j := range active {
		if j.Phase != store.PhaseExecuting {
			continue
		}
		runs, err := m.st.Runs(ctx, j.ID)
		if err != nil {
			return nil, err
		}
		for _, r := range runs {
			if r.State == store.RunDispatched || r.State == store.RunRunning { // not waiting or queued on the hub
				out[r.AgentID] = append(out[r.AgentID], j.ID)
			}
		}
	}
	return out, nil
}
