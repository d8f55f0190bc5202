package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Tests of several steps (docs/jobs.md, "Several steps in one test").
//
// A job whose Spec lists Steps is one UWS job whose runs are made by
// child jobs, one per step, each with its own action, targets and
// parameters (a plain job, or a matrix job with children of its own).
// The steps job itself has no action and no runs:
//   - RUN moves it to EXECUTING and runs the steps whose ordering allows
//     (advanceSteps): a step without After at once; one After A with
//     When "running" once A is EXECUTING (or has completed), with
//     "finished" once A has COMPLETED;
//   - each phase change of a step to EXECUTING or a final phase, on the
//     node that made it, advances the test again (from apply);
//   - a step that ends other than COMPLETED fails the test: its
//     unfinished steps are aborted (those never started too) and the
//     test ends in ERROR naming the steps that did not complete; when
//     every step has COMPLETED the test is COMPLETED;
//   - ABORT, DESTRUCTION, EXECUTIONDURATION and DELETE reach the steps
//     (and through a matrix step its combinations).

// Limits of a test's steps, checked at creation (a *TargetError, 400).
const (
	// MaxSteps bounds the steps of one test.
	MaxSteps = 16
	// maxStepName bounds a step's name, in bytes.
	maxStepName = 64
)

// StepSpec is one step of a test as a client asks for it.
type StepSpec struct {
	// Name names the step in the test's results; unique in the test.
	Name            string
	Action, Targets string
	Params          map[string]string
	// Matrix makes the step a matrix job (matrix.go).
	Matrix  []store.MatrixParam
	Require string
	// After names an earlier step this one waits for ("" none); When is
	// what it waits for: store.StepWhenRunning or store.StepWhenFinished
	// ("" is finished).
	After, When string
}

// StepID is the id of a test's child job for step i (0-based).
func StepID(parent string, i int) string { return parent + "-s" + strconv.Itoa(i+1) }

// validStepName reports whether name can name a step: 1 to maxStepName
// bytes of letters, digits, '-', '_' and '.' (it appears in results,
// CSV cells and run names).
func validStepName(name string) bool {
	if name == "" || len(name) > maxStepName {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// checkSteps checks the names and ordering of steps and returns them as
// stored on the test (Job filled in, When defaulted).
func checkSteps(parent string, specs []StepSpec) ([]store.Step, error) {
	bad := func(format string, args ...any) error {
		return &TargetError{"invalid_parameter", fmt.Sprintf(format, args...)}
	}
	if len(specs) > MaxSteps {
		return nil, bad("a test has %d steps, at most %d are allowed", len(specs), MaxSteps)
	}
	out := make([]store.Step, len(specs))
	for i, s := range specs {
		if !validStepName(s.Name) {
			return nil, bad("step %d: name %q must be 1 to %d letters, digits, '-', '_' or '.'", i+1, Truncate(s.Name, 64), maxStepName)
		}
		if slices.ContainsFunc(out[:i], func(p store.Step) bool { return p.Name == s.Name }) {
			return nil, bad("step %s: the name is given twice", s.Name)
		}
		when := s.When
		switch {
		case s.After == "" && when != "":
			return nil, bad("step %s: when %q without after", s.Name, Truncate(when, 64))
		case s.After == "":
		case !slices.ContainsFunc(out[:i], func(p store.Step) bool { return p.Name == s.After }):
			return nil, bad("step %s: after %q names no earlier step", s.Name, Truncate(s.After, 64))
		case when == "":
			when = store.StepWhenFinished
		case when != store.StepWhenRunning && when != store.StepWhenFinished:
			return nil, bad("step %s: when must be %s or %s", s.Name, store.StepWhenRunning, store.StepWhenFinished)
		}
		out[i] = store.Step{Name: s.Name, Job: StepID(parent, i), After: s.After, When: when}
	}
	return out, nil
}

// createSteps stores a test of several steps j (PENDING) and its steps'
// jobs, after checking each as Create does. On a failure what was stored
// is removed again.
func (m *Manager) createSteps(ctx context.Context, j store.Job, agents []store.Agent, specs []StepSpec) (store.Job, error) {
	if j.Action != "" || j.Targets != "" || len(j.Matrix) > 0 {
		return j, &TargetError{"invalid_parameter", "a test of several steps gives its action, targets and parameters in each step"}
	}
	steps, err := checkSteps(j.ID, specs)
	if err != nil {
		return j, err
	}
	j.Steps = steps
	// Check every step before storing anything.
	kids := make([]store.Job, len(specs))
	for i, s := range specs {
		k := store.Job{ID: steps[i].Job, RunID: j.RunID, Owner: j.Owner, Action: s.Action, Targets: s.Targets,
			Phase: store.PhasePending, CreatedAt: j.CreatedAt, Destruction: j.Destruction,
			ExecDuration: j.ExecDuration, Parent: j.ID, Matrix: s.Matrix}
		switch s.Require {
		case "", RequireAll:
		case store.RequireAvailable:
			k.Require = store.RequireAvailable
		default:
			return j, &TargetError{"invalid_parameter", fmt.Sprintf("step %s: REQUIRE must be %s or %s", s.Name, RequireAll, store.RequireAvailable)}
		}
		if len(k.Matrix) == 0 {
			if k.Params, err = resolveAction(agents, k.Targets, k.Action, s.Params); err != nil {
				return j, stepError(s.Name, err)
			}
		} else {
			decl, matched, err := declaredAction(agents, k.Targets, k.Action)
			if err != nil {
				return j, stepError(s.Name, err)
			}
			if _, _, err := checkMatrix(decl, matched, k.Matrix, s.Params); err != nil {
				return j, stepError(s.Name, err)
			}
			k.Params = s.Params
		}
		kids[i] = k
	}
	if err := m.st.CreateJob(ctx, j); err != nil {
		return j, err
	}
	for i, k := range kids {
		if len(k.Matrix) > 0 {
			_, err = m.createMatrix(ctx, k, agents, k.Params)
		} else if err = m.st.CreateJob(ctx, k); err == nil {
			m.armDestruction(k)
		}
		if err != nil {
			m.undoSteps(j.ID, kids[:i])
			return j, stepError(specs[i].Name, err)
		}
	}
	m.armDestruction(j)
	m.timersChanged(j)
	m.log.Info("jobs: test of several steps created", "job", j.ID, "steps", len(steps), "owner", j.Owner)
	return j, nil
}

// stepError names the step in a *TargetError (others pass unchanged).
func stepError(step string, err error) error {
	var te *TargetError
	if errors.As(err, &te) {
		return &TargetError{te.Code, "step " + step + ": " + te.Msg}
	}
	return err
}

// undoSteps deletes a test and the steps' jobs made so far after a
// failed creation (best effort).
func (m *Manager) undoSteps(id string, made []store.Job) {
	ctx, cancel := bgCtx()
	defer cancel()
	for _, k := range made {
		if len(k.Matrix) > 0 {
			m.undoCreate(k.ID, len(Combinations(k.Matrix)))
			continue
		}
		if err := m.st.DeleteJob(ctx, k.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.log.Error("jobs: remove a step after a failed creation", "job", k.ID, "err", err)
		}
	}
	if err := m.st.DeleteJob(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		m.log.Error("jobs: remove a test after a failed creation", "job", id, "err", err)
	}
}

// isParent reports whether j's runs are made by child jobs (a matrix job
// or a test of several steps).
func isParent(j store.Job) bool { return len(j.Matrix) > 0 || len(j.Steps) > 0 }

// StepJobs reads the jobs of a test's steps, in the order of j.Steps
// (none for another job; a step whose job is gone is left out, with its
// entry in the returned steps).
func (m *Manager) StepJobs(ctx context.Context, j store.Job) ([]store.Step, []store.Job, error) {
	if len(j.Steps) == 0 {
		return nil, nil, nil
	}
	byID, err := m.childrenByID(ctx, j.ID)
	if err != nil {
		return nil, nil, err
	}
	var steps []store.Step
	var jobs []store.Job
	for _, s := range j.Steps {
		if k, ok := byID[s.Job]; ok {
			steps = append(steps, s)
			jobs = append(jobs, k)
		}
	}
	return steps, jobs, nil
}

// stepReady reports whether step s may start, given the phases of the
// steps by name.
func stepReady(s store.Step, phase map[string]store.Phase) bool {
	if s.After == "" {
		return true
	}
	p := phase[s.After]
	if s.When == store.StepWhenRunning && p == store.PhaseExecuting {
		return true
	}
	return p == store.PhaseCompleted
}

// startSteps is the dispatch of a QUEUED test of several steps: it moves
// to EXECUTING and its steps are started as their ordering allows.
func (m *Manager) startSteps(j store.Job) {
	if j.Phase == store.PhaseQueued {
		ctx, cancel := bgCtx()
		var ok bool
		j, ok = m.startParent(ctx, j)
		cancel()
		if !ok {
			return
		}
	}
	m.advanceSteps(j.ID)
}

// advanceSteps moves an EXECUTING test of several steps on: it starts
// the steps whose ordering now allows, aborts the unfinished ones once a
// step has failed, and ends the test when every step has ended.
func (m *Manager) advanceSteps(id string) {
	ctx, cancel := bgCtx()
	defer cancel()
	j, ok := m.executingParent(ctx, id, func(j store.Job) bool { return len(j.Steps) > 0 }, "jobs: advance a test's steps")
	if !ok {
		return
	}
	steps, kids, err := m.StepJobs(ctx, j)
	if err != nil {
		m.retryDispatch(id, err)
		return
	}
	phase := make(map[string]store.Phase, len(steps))
	var failed []string
	done := true
	end := time.Time{}
	for i, k := range kids {
		phase[steps[i].Name] = k.Phase
		if !k.Phase.Final() {
			done = false
			continue
		}
		if k.EndedAt.After(end) {
			end = k.EndedAt
		}
		if why := childFailure(k); why != "" {
			failed = append(failed, "step "+steps[i].Name+" "+why)
		}
	}
	if len(failed) > 0 && !done {
		// One failed step fails the test: the others are not waited for.
		m.abortUnfinished(kids, "the test failed: "+Truncate(failed[0], 300), "jobs: abort a test's step")
		return // each abort advances the test again
	}
	if !done {
		m.runChildren(ctx, id, kids, func(i int) bool { return stepReady(steps[i], phase) })
		return
	}
	m.endParent(ctx, id, stepsKind, len(kids), failed, end)
}

// childChanged is called on the node that moved job child (whose Parent
// is parent) to phase: it moves the parent on.
func (m *Manager) childChanged(parent string, phase store.Phase) {
	ctx, cancel := bgCtx()
	p, err := m.st.Job(ctx, parent)
	cancel()
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			m.log.Error("jobs: a child job's parent", "job", parent, "err", err)
		}
		return
	}
	switch {
	case len(p.Steps) > 0:
		m.advanceSteps(parent)
	case len(p.Matrix) > 0 && phase.Final():
		m.finishMatrixIfDone(parent)
	}
}

// childIDs lists the ids of a parent job's children (its combinations
// or its steps; none for another job).
func (m *Manager) childIDs(ctx context.Context, j store.Job) ([]string, error) {
	kids, err := m.childJobs(ctx, j)
	ids := make([]string, len(kids))
	for i, k := range kids {
		ids[i] = k.ID
	}
	return ids, err
}
