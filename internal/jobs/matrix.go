package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Matrix jobs (docs/jobs.md, "Matrix parameters").
//
// A job whose Spec gives a parameter several values is a matrix job: one
// UWS job a client sees, runs and aborts, whose runs are made by child
// jobs, one per combination of the values. A child is an ordinary job
// (its Parent is the matrix job; its Params hold one value of each matrix
// parameter, so every agent receives plain values) and goes through the
// state machine as any other: dispatch, slots, lost runs, results and
// files, restart recovery. The matrix job itself has no runs:
//   - RUN moves it to EXECUTING and runs its children (startMatrix);
//   - each final phase of a child, on the node that made the change,
//     checks whether every child has ended, and then ends the matrix job:
//     COMPLETED when every child completed, else ERROR naming the
//     combinations that did not (finishMatrixIfDone, from apply);
//   - ABORT, DESTRUCTION, EXECUTIONDURATION and DELETE reach the children.
//
// Children are listed only as a matrix job's (store.JobFilter.Parent) and
// the UWS binding refuses changes made to them directly.

// Limits of a matrix, checked at creation (a *TargetError naming the
// parameter, answered 400).
const (
	// MaxMatrixValues bounds the values of one matrix parameter.
	MaxMatrixValues = 100
	// MaxMatrixCombinations bounds the combinations (child jobs) of a
	// matrix job: the product of its parameters' value counts.
	MaxMatrixCombinations = 256
	// MaxMatrixRuns bounds combinations × the agents the targets match
	// when the job is created.
	MaxMatrixRuns = 10000
)

// Combination is one child job of a matrix job: its values of the matrix
// parameters, in the matrix's order.
type Combination struct {
	JobID  string
	Values []store.MatrixParam // each with one value
}

// Label names a combination for people: "name=value" pairs joined by
// ", " ("server=http://s1/f, size=10").
func (c Combination) Label() string {
	parts := make([]string, len(c.Values))
	for i, p := range c.Values {
		parts[i] = p.Name + "=" + p.Values[0]
	}
	return strings.Join(parts, ", ")
}

// Combinations lists the combinations of a matrix in the order of its
// child jobs: the first parameter varies slowest.
func Combinations(matrix []store.MatrixParam) [][]store.MatrixParam {
	out := [][]store.MatrixParam{nil}
	for _, p := range matrix {
		next := make([][]store.MatrixParam, 0, len(out)*len(p.Values))
		for _, prefix := range out {
			for _, v := range p.Values {
				c := append(slices.Clip(prefix), store.MatrixParam{Name: p.Name, Values: []string{v}})
				next = append(next, c)
			}
		}
		out = next
	}
	return out
}

// ChildID is the id of a matrix job's child for combination i (0-based, in
// the order of Combinations).
func ChildID(parent string, i int) string { return parent + "-" + strconv.Itoa(i+1) }

// checkMatrix checks a matrix against its action's declaration and the
// limits, and returns it with each name as declared, and the parameters of
// every combination, checked (defaults filled in), in the order of
// Combinations. params are the single-valued parameters.
func checkMatrix(decl *jobproto.Action, matched int, matrix []store.MatrixParam, params map[string]string) ([]store.MatrixParam, []map[string]string, error) {
	bad := func(name, format string, args ...any) error {
		return &TargetError{"invalid_parameter", "parameter " + name + ": " + fmt.Sprintf(format, args...)}
	}
	out := make([]store.MatrixParam, 0, len(matrix))
	combos := 1
	for _, p := range matrix {
		i := slices.IndexFunc(decl.Params, func(d jobproto.Param) bool { return strings.EqualFold(d.Name, p.Name) })
		if i < 0 {
			return nil, nil, bad(Truncate(p.Name, 64), "is not a parameter of action %s", decl.Name)
		}
		name := decl.Params[i].Name
		if slices.ContainsFunc(out, func(q store.MatrixParam) bool { return q.Name == name }) {
			return nil, nil, bad(name, "is given twice")
		}
		for k := range params {
			if strings.EqualFold(k, name) {
				return nil, nil, bad(name, "is given both one value and several")
			}
		}
		switch n := len(p.Values); {
		case n == 0:
			return nil, nil, bad(name, "has no value")
		case n > MaxMatrixValues:
			return nil, nil, bad(name, "has %d values, at most %d are allowed", n, MaxMatrixValues)
		}
		for j, v := range p.Values {
			if slices.Contains(p.Values[:j], v) {
				return nil, nil, bad(name, "value %q is given twice", Truncate(v, 64))
			}
			if err := decl.Params[i].Check(v); err != nil {
				return nil, nil, &TargetError{"invalid_parameter", err.Error()}
			}
		}
		combos *= len(p.Values)
		if combos > MaxMatrixCombinations {
			return nil, nil, bad(name, "the matrix has more than %d combinations (%s)", MaxMatrixCombinations, matrixSize(matrix))
		}
		out = append(out, store.MatrixParam{Name: name, Values: slices.Clone(p.Values)})
	}
	if runs := combos * matched; runs > MaxMatrixRuns {
		return nil, nil, bad(out[len(out)-1].Name, "the matrix makes %d runs (%d combinations × %d agents), at most %d are allowed",
			runs, combos, matched, MaxMatrixRuns)
	}
	var checked []map[string]string
	for _, c := range Combinations(out) {
		given := make(map[string]string, len(params)+len(c))
		for k, v := range params {
			given[k] = v
		}
		for _, p := range c {
			given[p.Name] = p.Values[0]
		}
		ps, err := decl.CheckParams(given)
		if err != nil {
			return nil, nil, &TargetError{"invalid_parameter", err.Error()}
		}
		checked = append(checked, ps)
	}
	return out, checked, nil
}

// matrixSize describes a matrix's shape: "count 3 × server 4 values".
func matrixSize(matrix []store.MatrixParam) string {
	parts := make([]string, len(matrix))
	for i, p := range matrix {
		parts[i] = p.Name + " " + strconv.Itoa(len(p.Values))
	}
	return strings.Join(parts, " × ") + " values"
}

// createMatrix stores a matrix job j (PENDING, Matrix unchecked) and its
// children, after checking the matrix. On a store failure what was stored
// is removed again.
func (m *Manager) createMatrix(ctx context.Context, j store.Job, agents []store.Agent, params map[string]string) (store.Job, error) {
	decl, matched, err := declaredAction(agents, j.Targets, j.Action)
	if err != nil {
		return j, err
	}
	matrix, combos, err := checkMatrix(decl, matched, j.Matrix, params)
	if err != nil {
		return j, err
	}
	j.Matrix = matrix
	// The matrix job's parameters are those every combination shares.
	j.Params = map[string]string{}
	for k, v := range combos[0] {
		if !slices.ContainsFunc(matrix, func(p store.MatrixParam) bool { return p.Name == k }) {
			j.Params[k] = v
		}
	}
	if err := m.st.CreateJob(ctx, j); err != nil {
		return j, err
	}
	for i, ps := range combos {
		c := store.Job{ID: ChildID(j.ID, i), RunID: j.RunID, Owner: j.Owner, Action: j.Action, Targets: j.Targets,
			Params: ps, Phase: store.PhasePending, Require: j.Require, CreatedAt: j.CreatedAt,
			Destruction: j.Destruction, ExecDuration: j.ExecDuration, Parent: j.ID}
		if err := m.st.CreateJob(ctx, c); err != nil {
			m.undoCreate(j.ID, i)
			return j, err
		}
	}
	m.armDestruction(j)
	m.timersChanged(j)
	for i := range combos {
		c := store.Job{ID: ChildID(j.ID, i), Phase: store.PhasePending, Destruction: j.Destruction}
		m.armDestruction(c)
	}
	m.log.Info("jobs: matrix job created", "job", j.ID, "action", j.Action, "targets", j.Targets,
		"combinations", len(combos), "owner", j.Owner)
	return j, nil
}

// undoCreate deletes a matrix job and its first n children after a failed
// creation (best effort: the store failed already once).
func (m *Manager) undoCreate(id string, n int) {
	ctx, cancel := bgCtx()
	defer cancel()
	for i := range n {
		if err := m.st.DeleteJob(ctx, ChildID(id, i)); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.log.Error("jobs: remove a matrix job's child after a failed creation", "job", ChildID(id, i), "err", err)
		}
	}
	if err := m.st.DeleteJob(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		m.log.Error("jobs: remove a matrix job after a failed creation", "job", id, "err", err)
	}
}

// Children lists a matrix job's children, in the order of its
// combinations (none for another job).
func (m *Manager) Children(ctx context.Context, j store.Job) ([]Combination, []store.Job, error) {
	if len(j.Matrix) == 0 {
		return nil, nil, nil
	}
	byID, err := m.childrenByID(ctx, j.ID)
	if err != nil {
		return nil, nil, err
	}
	var combos []Combination
	var jobs []store.Job
	for i, c := range Combinations(j.Matrix) {
		k, ok := byID[ChildID(j.ID, i)]
		if !ok {
			continue // removed after a failed creation, or by hand
		}
		combos = append(combos, Combination{JobID: k.ID, Values: c})
		jobs = append(jobs, k)
	}
	return combos, jobs, nil
}

// children reads the children of the matrix job id (nil for another job).
func (m *Manager) children(ctx context.Context, id string) ([]store.Job, error) {
	j, err := m.st.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	return m.childJobs(ctx, j)
}

// childJobs reads the children of the parent job j: its combinations or
// its steps, in their order (none for another job).
func (m *Manager) childJobs(ctx context.Context, j store.Job) ([]store.Job, error) {
	if len(j.Steps) > 0 {
		_, kids, err := m.StepJobs(ctx, j)
		return kids, err
	}
	_, kids, err := m.Children(ctx, j)
	return kids, err
}

// startMatrix is the dispatch of a QUEUED matrix job: it moves to
// EXECUTING and its children still PENDING are run. It is also what
// restarts the children of an EXECUTING matrix job left PENDING by a
// crash or a store failure.
func (m *Manager) startMatrix(j store.Job) {
	ctx, cancel := bgCtx()
	defer cancel()
	if j.Phase == store.PhaseQueued {
		var ok bool
		if j, ok = m.startParent(ctx, j); !ok {
			return
		}
	}
	if j.Phase != store.PhaseExecuting {
		return
	}
	kids, err := m.children(ctx, j.ID)
	if err != nil {
		m.retryDispatch(j.ID, err)
		return
	}
	m.runChildren(ctx, j.ID, kids, func(int) bool { return true })
}

// finishMatrixIfDone ends an EXECUTING matrix job whose children have all
// ended: COMPLETED if each completed, else ERROR. A child still PENDING
// (left by a crash) is run.
func (m *Manager) finishMatrixIfDone(id string) {
	ctx, cancel := bgCtx()
	defer cancel()
	j, ok := m.executingParent(ctx, id, func(j store.Job) bool { return len(j.Matrix) > 0 }, "jobs: finish a matrix job")
	if !ok {
		return
	}
	combos, kids, err := m.Children(ctx, j)
	if err != nil {
		m.log.Error("jobs: finish a matrix job", "job", id, "err", err)
		return
	}
	var failed []string
	end := time.Time{}
	for i, k := range kids {
		if !k.Phase.Final() {
			if k.Phase == store.PhasePending {
				m.goBackground(func() { m.startMatrix(j) })
			}
			return
		}
		if k.EndedAt.After(end) {
			end = k.EndedAt
		}
		if why := childFailure(k); why != "" {
			failed = append(failed, combos[i].Label()+" "+why)
		}
	}
	m.endParent(ctx, id, matrixKind, len(kids), failed, end)
}

// abortChildren aborts the unfinished children of the matrix job id.
func (m *Manager) abortChildren(id, why string) {
	ctx, cancel := bgCtx()
	defer cancel()
	kids, err := m.children(ctx, id)
	if err != nil {
		m.log.Error("jobs: abort a matrix job's children", "job", id, "err", err)
		return
	}
	if why == "" {
		why = "the matrix job was aborted"
	}
	m.abortUnfinished(kids, why, "jobs: abort a matrix job's child")
}

// forChildren calls f for each child of the matrix job j (none for
// another job) and returns the first error other than a *PhaseError
// (a child that has ended refuses what no longer applies to it).
func (m *Manager) forChildren(ctx context.Context, j store.Job, f func(id string) error) error {
	ids, err := m.childIDs(ctx, j)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := f(id); err != nil {
			var pe *PhaseError
			if !errors.As(err, &pe) && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}
