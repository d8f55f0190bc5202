package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Definition is one version of a saved test definition (docs/jobs.md,
// "Saved test definitions"): a job's action, targets, parameters (a
// matrix's included) and settings under a name, to run again. Versions of
// a name are numbered from 1; a change stores a new version, so the jobs
// started from an older one keep pointing at what they ran.
type Definition struct {
	Name    string
	Version int // set by PutDefinition
	Owner   string
	// Spec is the definition as the API stores it: a JSON object, kept
	// byte for byte.
	Spec      json.RawMessage
	CreatedAt time.Time // set by PutDefinition when zero
}

// MaxDefinitionNameBytes bounds a definition's name.
const MaxDefinitionNameBytes = 128

// DefinitionStore keeps the saved test definitions. Part of JobStore.
type DefinitionStore interface {
	// PutDefinition stores d as the next version of its name (1 for a
	// new name) and returns it as stored. Name must be valid
	// (ValidDefinitionName) and Spec a JSON object.
	PutDefinition(ctx context.Context, d Definition) (Definition, error)
	// Definition returns a version of a definition (version 0: the
	// newest), or ErrNotFound.
	Definition(ctx context.Context, name string, version int) (Definition, error)
	// DefinitionVersions lists the versions of a name, oldest first (none,
	// and no error, for an unknown name).
	DefinitionVersions(ctx context.Context, name string) ([]Definition, error)
	// Definitions lists the newest version of each name, by name, of one
	// owner ("" for every owner).
	Definitions(ctx context.Context, owner string) ([]Definition, error)
}

// ValidDefinitionName reports whether s can name a definition: 1 to
// MaxDefinitionNameBytes bytes of UTF-8 without control characters or '/'.
func ValidDefinitionName(s string) bool {
	if s == "" || len(s) > MaxDefinitionNameBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '/' {
			return false
		}
	}
	return true
}

// Validate reports whether d can be stored.
func (d Definition) Validate() error {
	if !ValidDefinitionName(d.Name) {
		return fmt.Errorf("store: definition name %q is not valid", d.Name)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(d.Spec, &obj); err != nil || obj == nil {
		return errors.New("store: definition " + d.Name + ": the spec is not a JSON object")
	}
	return nil
}

// Schedule is when a definition runs by itself (docs/jobs.md,
// "Scheduling"): at Next, then every Every (0: once), with at most
// MaxRunning of its jobs unfinished at once (a firing that would pass it
// is skipped). One per definition name.
type Schedule struct {
	Definition string
	Owner      string // the subject the scheduled jobs belong to
	Every      time.Duration
	Next       time.Time
	MaxRunning int
	CreatedAt  time.Time // set by PutSchedule when zero
}

// ScheduleStore keeps the schedules of definitions. Part of JobStore.
// Times are kept in UTC with microsecond precision; Every in whole
// microseconds.
type ScheduleStore interface {
	// PutSchedule inserts or replaces the schedule of s.Definition.
	PutSchedule(ctx context.Context, s Schedule) error
	// Schedule returns the schedule of a definition, or ErrNotFound.
	Schedule(ctx context.Context, definition string) (Schedule, error)
	// DeleteSchedule deletes it; ErrNotFound if there is none.
	DeleteSchedule(ctx context.Context, definition string) error
	// Schedules lists every schedule, by definition name.
	Schedules(ctx context.Context) ([]Schedule, error)
	// AdvanceSchedule moves a schedule's Next from from to to, if it is
	// still from, and reports whether it did: of the nodes that find a
	// firing due, one wins it.
	AdvanceSchedule(ctx context.Context, definition string, from, to time.Time) (bool, error)
}

// Validate reports whether s can be stored.
func (s Schedule) Validate() error {
	switch {
	case !ValidDefinitionName(s.Definition):
		return fmt.Errorf("store: schedule: definition name %q is not valid", s.Definition)
	case s.Every < 0 || s.MaxRunning < 1 || s.Next.IsZero():
		return fmt.Errorf("store: schedule %s: Every must not be negative, MaxRunning positive and Next set", s.Definition)
	}
	return nil
}
