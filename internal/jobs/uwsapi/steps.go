package uwsapi

import (
	"context"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Tests of several steps in the UWS binding (docs/jobs.md, "Several steps
// in one test"): a JSON creation (or a definition) with "steps" makes one
// UWS job whose runs are its steps' (each a plain or a matrix job). The
// job is rendered as a matrix job whose combinations are the steps' jobs
// (a matrix step gives one per combination), each named by the parameter
// "step" first: so the summary, the export, the matrix result and the
// comparison cover every step, and each run names its step.

// stepParam is the name under which a run's step appears among its
// combination's values (and the matrix result's parameters).
const stepParam = "step"

// stepRequest is one step of a JSON creation or a definition.
type stepRequest struct {
	Name    string `json:"name"`
	Action  string `json:"action"`
	Targets string `json:"targets"`
	Require string `json:"require,omitempty"`
	// Parameters as in a creation: a string, or an array of strings (a
	// matrix parameter of the step).
	Parameters map[string]paramValues `json:"parameters,omitempty"`
	// After names an earlier step; When is "running" or "finished" (the
	// default).
	After string `json:"after,omitempty"`
	When  string `json:"when,omitempty"`
}

// stepSpecs converts the steps of a request for jobs.Create.
func stepSpecs(reqs []stepRequest) []jobs.StepSpec {
	out := make([]jobs.StepSpec, len(reqs))
	for i, s := range reqs {
		plain, matrix := splitMatrix(s.Parameters)
		out[i] = jobs.StepSpec{Name: s.Name, Action: s.Action, Targets: strings.TrimSpace(s.Targets), Params: plain,
			Matrix: matrix, Require: strings.ToLower(s.Require), After: s.After, When: strings.ToLower(s.When)}
	}
	return out
}

// stepsView is what a test of several steps' rendering adds: its steps
// and their jobs.
type stepsView struct {
	Steps []store.Step
	Jobs  []store.Job // by step
}

// loadSteps fills v.Runs, v.Steps and v.Matrix from a test's steps: the
// matrix view's combinations are the steps' jobs, a matrix step's
// combinations each, with the step's name as the value of stepParam.
func (h *API) loadSteps(ctx context.Context, v *jobView) error {
	steps, kids, err := h.jobs.StepJobs(ctx, v.Job)
	if err != nil {
		return err
	}
	v.Steps = &stepsView{Steps: steps, Jobs: kids}
	mv := &matrixView{}
	v.Runs = nil
	for i, k := range kids {
		name := []store.MatrixParam{{Name: stepParam, Values: []string{steps[i].Name}}}
		leaves := []jobs.Combination{{JobID: k.ID, Values: name}}
		leafJobs := []store.Job{k}
		if len(k.Matrix) > 0 {
			combos, grandkids, err := h.jobs.Children(ctx, k)
			if err != nil {
				return err
			}
			leaves, leafJobs = nil, grandkids
			for _, c := range combos {
				leaves = append(leaves, jobs.Combination{JobID: c.JobID, Values: append(name[:1:1], c.Values...)})
			}
		}
		for n, leaf := range leafJobs {
			runs, err := h.jobs.Runs(ctx, leaf.ID)
			if err != nil {
				return err
			}
			for range runs {
				mv.RunCombo = append(mv.RunCombo, len(mv.Combos))
			}
			v.Runs = append(v.Runs, runs...)
			mv.Combos = append(mv.Combos, leaves[n])
			mv.Children = append(mv.Children, leaf)
		}
	}
	v.Matrix = mv
	return nil
}

// runStep is the step run i of v belongs to ("" unless v is a test of
// several steps).
func (v *jobView) runStep(i int) string {
	if v.Steps == nil {
		return ""
	}
	return v.Matrix.Combos[v.Matrix.RunCombo[i]].Values[0].Values[0]
}

// matrixParameters names the parameters of v's matrix view, in order:
// the job's matrix parameters; on a test of several steps stepParam and
// then each step's, first use first.
func (v *jobView) matrixParameters() []string {
	if v.Steps == nil {
		var out []string
		for _, p := range v.Job.Matrix {
			out = append(out, p.Name)
		}
		return out
	}
	out := []string{stepParam}
	for _, c := range v.Matrix.Combos {
		for _, p := range c.Values[1:] {
			if !containsString(out, p.Name) {
				out = append(out, p.Name)
			}
		}
	}
	return out
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
