package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// selector is a job's targets: agent ids, or labels that must all match.
type selector struct {
	ids    []string
	labels []string
}

// parseTargets reads "c1,c2" (agent ids) or "role=client,site=UNL" (a
// label selector). Mixing both, empty items and invalid ids are errors.
func parseTargets(s string) (selector, error) {
	var sel selector
	s = strings.TrimSpace(s)
	if s == "" {
		return sel, errors.New("targets is required: agent ids (c1,c2) or a label selector (role=client)")
	}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
			return selector{}, errors.New("targets has an empty item")
		case strings.Contains(item, "="):
			if !jobproto.ValidLabel(item) {
				return selector{}, fmt.Errorf("targets: %q is not a label key=value", Truncate(item, 64))
			}
			sel.labels = append(sel.labels, item)
		default:
			if !validAgentID(item) {
				return selector{}, fmt.Errorf("targets: %q is not an agent id", Truncate(item, 64))
			}
			sel.ids = append(sel.ids, item)
		}
	}
	if len(sel.ids) > 0 && len(sel.labels) > 0 {
		return selector{}, errors.New("targets is ambiguous: give agent ids or labels, not both")
	}
	if len(sel.ids)+len(sel.labels) > 1000 {
		return selector{}, errors.New("targets: at most 1000 items")
	}
	return sel, nil
}

// matches reports whether an agent with this id and labels is targeted.
func (s selector) matches(id string, labels []string) bool {
	if len(s.ids) > 0 {
		return slices.Contains(s.ids, id)
	}
	for _, l := range s.labels {
		if !slices.Contains(labels, l) {
			return false
		}
	}
	return len(s.labels) > 0
}

// TargetError is a create request whose targets, action or parameters do
// not fit the agents (UWS: 400 with Code).
type TargetError struct{ Code, Msg string }

func (e *TargetError) Error() string { return e.Msg }

// resolveAction checks targets, action and parameters against the agents
// known (connected or seen before) and returns the validated parameters.
// The action must be declared, identically, by every targeted agent that
// declares it, and by at least one.
func resolveAction(agents []store.Agent, targets, action string, params map[string]string) (map[string]string, error) {
	decl, _, err := declaredAction(agents, targets, action)
	if err != nil {
		return nil, err
	}
	out, err := decl.CheckParams(params)
	if err != nil {
		return nil, &TargetError{"invalid_parameter", err.Error()}
	}
	return out, nil
}

// declaredAction checks targets and action against the agents known, as
// resolveAction does, and returns the action's declaration and how many
// known agents the targets match.
func declaredAction(agents []store.Agent, targets, action string) (*jobproto.Action, int, error) {
	sel, err := parseTargets(targets)
	if err != nil {
		return nil, 0, &TargetError{"invalid_targets", err.Error()}
	}
	known := map[string]bool{}
	for _, a := range agents {
		known[a.ID] = true
	}
	for _, id := range sel.ids {
		if !known[id] {
			return nil, 0, &TargetError{"unknown_target", fmt.Sprintf("no agent %q is known: it never connected, or was forgotten", id)}
		}
	}
	if action == "" {
		return nil, 0, &TargetError{"invalid_action", "action is required"}
	}
	var decl *jobproto.Action
	var declaredBy string
	matched := 0
	for _, a := range agents {
		if !sel.matches(a.ID, a.Labels) {
			continue
		}
		matched++
		var acts []jobproto.Action
		if len(a.Actions) > 0 {
			if err := json.Unmarshal(a.Actions, &acts); err != nil {
				continue
			}
		}
		i := slices.IndexFunc(acts, func(x jobproto.Action) bool { return x.Name == action })
		if i < 0 {
			continue
		}
		if decl != nil && !decl.Equal(&acts[i]) {
			return nil, 0, &TargetError{"ambiguous_action", fmt.Sprintf("agents %s and %s declare action %q differently; target agents with one declaration", declaredBy, a.ID, action)}
		}
		if decl == nil {
			decl, declaredBy = &acts[i], a.ID
		}
	}
	if matched == 0 {
		return nil, 0, &TargetError{"unknown_target", fmt.Sprintf("no agent matches targets %q", targets)}
	}
	if decl == nil {
		return nil, 0, &TargetError{"unknown_action", fmt.Sprintf("no targeted agent offers action %q", action)}
	}
	return decl, matched, nil
}
