package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Tests of store.JobStore.

// zone is used to check that times come back in UTC.
var zone = time.FixedZone("UTC-3:30", -(3*3600 + 1800))

// tz returns t0+d in zone, with a sub-microsecond part the store drops.
func tz(d time.Duration) time.Time { return t0.Add(d + 789*time.Nanosecond).In(zone) }

func mustCreateJob(t *testing.T, s store.Store, j store.Job) {
	t.Helper()
	if err := s.CreateJob(ctxT(t), j); err != nil {
		t.Fatalf("CreateJob(%s): %v", j.ID, err)
	}
}

func getJob(t *testing.T, s store.Store, id string) store.Job {
	t.Helper()
	j, err := s.Job(ctxT(t), id)
	if err != nil {
		t.Fatalf("Job(%s): %v", id, err)
	}
	return j
}

func listJobs(t *testing.T, s store.Store, f store.JobFilter) []store.Job {
	t.Helper()
	js, err := s.Jobs(ctxT(t), f)
	if err != nil {
		t.Fatalf("Jobs(%+v): %v", f, err)
	}
	return js
}

func jobIDs(js []store.Job) []string {
	out := []string{}
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}

func mustPutRun(t *testing.T, s store.Store, r store.Run) {
	t.Helper()
	if err := s.PutRun(ctxT(t), r); err != nil {
		t.Fatalf("PutRun(%s/%s): %v", r.JobID, r.AgentID, err)
	}
}

func listRuns(t *testing.T, s store.Store, jobID string) []store.Run {
	t.Helper()
	rs, err := s.Runs(ctxT(t), jobID)
	if err != nil {
		t.Fatalf("Runs(%s): %v", jobID, err)
	}
	return rs
}

func mustPutAgent(t *testing.T, s store.Store, a store.Agent) {
	t.Helper()
	if err := s.PutAgent(ctxT(t), a); err != nil {
		t.Fatalf("PutAgent(%s): %v", a.ID, err)
	}
}

func listAgents(t *testing.T, s store.Store) []store.Agent {
	t.Helper()
	as, err := s.Agents(ctxT(t))
	if err != nil {
		t.Fatalf("Agents: %v", err)
	}
	return as
}

func agentByID(t *testing.T, s store.Store, id string) store.Agent {
	t.Helper()
	for _, a := range listAgents(t, s) {
		if a.ID == id {
			return a
		}
	}
	t.Fatalf("agent %s not listed", id)
	return store.Agent{}
}

// diffs collects the differences between what a store returned and what
// was expected.
type diffs []string

func (d *diffs) add(format string, args ...any) { *d = append(*d, fmt.Sprintf(format, args...)) }

// time checks that got is want as stored: zero stays zero, else UTC with
// microsecond precision.
func (d *diffs) time(field string, got, want time.Time) {
	if want.IsZero() {
		if !got.IsZero() {
			d.add("%s = %v, want the zero time", field, got)
		}
		return
	}
	want = want.UTC().Truncate(time.Microsecond)
	if got.Location() != time.UTC {
		d.add("%s in location %v, want UTC", field, got.Location())
	}
	if !got.Equal(want) {
		d.add("%s = %v, want %v", field, got, want)
	}
}

func (d *diffs) str(field, got, want string) {
	if got != want {
		d.add("%s = %q, want %q", field, got, want)
	}
}

// strings compares lists, a nil list being equal to an empty one: the
// store may return either for an empty list.
func (d *diffs) strings(field string, got, want []string) {
	if len(got) != 0 || len(want) != 0 {
		if !slices.Equal(got, want) {
			d.add("%s = %q, want %q", field, got, want)
		}
	}
}

// params compares maps, a nil map being equal to an empty one.
func (d *diffs) params(field string, got, want map[string]string) {
	if len(got) != 0 || len(want) != 0 {
		if !maps.Equal(got, want) {
			d.add("%s = %v, want %v", field, got, want)
		}
	}
}

// json compares JSON text byte for byte, nil being equal to empty.
func (d *diffs) json(field string, got, want []byte) {
	if !bytes.Equal(got, want) {
		d.add("%s = %q, want %q (byte for byte)", field, got, want)
	}
}

func (d diffs) report(t *testing.T, what string) {
	t.Helper()
	for _, s := range d {
		t.Errorf("%s: %s", what, s)
	}
}

// checkJob compares every field but UpdatedAt (which checkJob only checks
// is set, in UTC).
func checkJob(t *testing.T, what string, got, want store.Job) {
	t.Helper()
	var d diffs
	d.str("ID", got.ID, want.ID)
	d.str("RunID", got.RunID, want.RunID)
	d.str("Owner", got.Owner, want.Owner)
	d.str("Action", got.Action, want.Action)
	d.str("Targets", got.Targets, want.Targets)
	d.params("Params", got.Params, want.Params)
	d.str("Phase", string(got.Phase), string(want.Phase))
	d.str("Require", got.Require, want.Require)
	d.strings("Agents", got.Agents, want.Agents)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("StartedAt", got.StartedAt, want.StartedAt)
	d.time("EndedAt", got.EndedAt, want.EndedAt)
	d.time("Quote", got.Quote, want.Quote)
	d.time("Destruction", got.Destruction, want.Destruction)
	if w := want.ExecDuration.Truncate(time.Microsecond); got.ExecDuration != w {
		d.add("ExecDuration = %v, want %v", got.ExecDuration, w)
	}
	d.str("ErrorType", got.ErrorType, want.ErrorType)
	d.str("ErrorSummary", got.ErrorSummary, want.ErrorSummary)
	d.str("Parent", got.Parent, want.Parent)
	if fmt.Sprint(got.Matrix) != fmt.Sprint(want.Matrix) || (got.Matrix == nil) != (len(want.Matrix) == 0) {
		d.add("Matrix = %#v, want %#v", got.Matrix, want.Matrix)
	}
	if fmt.Sprint(got.Steps) != fmt.Sprint(want.Steps) || (got.Steps == nil) != (len(want.Steps) == 0) {
		d.add("Steps = %#v, want %#v", got.Steps, want.Steps)
	}
	d.strings("Labels", got.Labels, want.Labels)
	d.str("Definition", got.Definition, want.Definition)
	if got.DefinitionVersion != want.DefinitionVersion {
		d.add("DefinitionVersion = %d, want %d", got.DefinitionVersion, want.DefinitionVersion)
	}
	if got.UpdatedAt.IsZero() || got.UpdatedAt.Location() != time.UTC {
		d.add("UpdatedAt = %v, want set, in UTC", got.UpdatedAt)
	}
	d.report(t, what)
}

func checkRun(t *testing.T, what string, got, want store.Run) {
	t.Helper()
	var d diffs
	d.str("JobID", got.JobID, want.JobID)
	d.str("AgentID", got.AgentID, want.AgentID)
	d.str("State", string(got.State), string(want.State))
	if got.ExitCode != want.ExitCode {
		d.add("ExitCode = %d, want %d", got.ExitCode, want.ExitCode)
	}
	d.str("Error", got.Error, want.Error)
	d.time("StartedAt", got.StartedAt, want.StartedAt)
	d.time("EndedAt", got.EndedAt, want.EndedAt)
	d.str("Stdout", got.Stdout, want.Stdout)
	d.str("Stderr", got.Stderr, want.Stderr)
	d.json("Metrics", got.Metrics, want.Metrics)
	if len(got.Files) != 0 || len(want.Files) != 0 {
		if !slices.Equal(got.Files, want.Files) {
			d.add("Files = %+v, want %+v", got.Files, want.Files)
		}
	}
	if got.UpdatedAt.IsZero() || got.UpdatedAt.Location() != time.UTC {
		d.add("UpdatedAt = %v, want set, in UTC", got.UpdatedAt)
	}
	d.report(t, what)
}

func checkAgent(t *testing.T, what string, got, want store.Agent) {
	t.Helper()
	var d diffs
	d.str("ID", got.ID, want.ID)
	d.strings("Labels", got.Labels, want.Labels)
	d.json("Actions", got.Actions, want.Actions)
	d.str("Version", got.Version, want.Version)
	d.str("Node", got.Node, want.Node)
	if got.Connected != want.Connected {
		d.add("Connected = %v, want %v", got.Connected, want.Connected)
	}
	d.time("FirstSeen", got.FirstSeen, want.FirstSeen)
	d.time("LastSeen", got.LastSeen, want.LastSeen)
	d.str("RemoteAddr", got.RemoteAddr, want.RemoteAddr)
	d.report(t, what)
}

// checkInvalid checks that err reports invalid input: an error, not
// ErrUnavailable nor ErrNotFound.
func checkInvalid(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s succeeded, want an error", what)
	case errors.Is(err, store.ErrUnavailable):
		t.Errorf("%s: invalid input reported as unavailable: %v", what, err)
	case errors.Is(err, store.ErrNotFound):
		t.Errorf("%s: invalid input reported as not found: %v", what, err)
	}
}

func checkNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: %v, want ErrNotFound", what, err)
	} else if errors.Is(err, store.ErrUnavailable) {
		t.Errorf("%s: not found reported as unavailable: %v", what, err)
	}
}

// fullJob has every field set, times in another zone with nanoseconds.
func fullJob(id string) store.Job {
	return store.Job{
		ID:           id,
		RunID:        "run-7",
		Owner:        "alice",
		Action:       "iperf",
		Targets:      "role=client,site=UNL",
		Params:       map[string]string{"duration": "10", "mode": "tcp", `we"ird <&>`: "ünï\ncode", "empty": ""},
		Phase:        store.PhaseQueued,
		Require:      store.RequireAvailable,
		Agents:       []string{"c2", "c1", "c10"},
		CreatedAt:    tz(0),
		StartedAt:    tz(time.Minute),
		EndedAt:      tz(2 * time.Minute),
		Quote:        tz(3 * time.Minute),
		Destruction:  tz(24 * time.Hour),
		ExecDuration: 90*time.Second + 1500*time.Nanosecond,
		ErrorType:    "transient",
		ErrorSummary: "c1: lost",
		Matrix: []store.MatrixParam{{Name: "server", Values: []string{"http://s2/", `we"ird <&>`, "ünï\ncode"}},
			{Name: "duration", Values: []string{"10", ""}}},
		Labels:            []string{"campaign=w48", "site=UNL"},
		Definition:        "nightly download",
		DefinitionVersion: 3,
	}
}

func testJobRoundTrip(t *testing.T, s store.Store) {
	before := time.Now().Add(-time.Second)
	full := fullJob("job-full")
	mustCreateJob(t, s, full)
	minimal := store.Job{ID: "job-minimal", Phase: store.PhasePending, CreatedAt: t0.Add(time.Second)}
	mustCreateJob(t, s, minimal)
	empty := store.Job{ID: "job-empty", Phase: store.PhasePending, CreatedAt: t0.Add(2 * time.Second),
		Params: map[string]string{}, Agents: []string{}}
	mustCreateJob(t, s, empty)
	after := time.Now().Add(time.Second)

	got := getJob(t, s, full.ID)
	checkJob(t, "full job", got, full)
	if got.ExecDuration != 90*time.Second+time.Microsecond {
		t.Errorf("ExecDuration = %v, want 1m30.000001s (microseconds kept)", got.ExecDuration)
	}
	if got.UpdatedAt.Before(before) || got.UpdatedAt.After(after) {
		t.Errorf("UpdatedAt = %v, want the time of CreateJob", got.UpdatedAt)
	}
	// Zero times, nil and empty maps and lists come back zero and empty.
	checkJob(t, "minimal job", getJob(t, s, minimal.ID), minimal)
	checkJob(t, "job with empty params and agents", getJob(t, s, empty.ID), empty)

	// A test of several steps keeps its steps (in the matrix column).
	stepped := store.Job{ID: "job-steps", Phase: store.PhaseExecuting, CreatedAt: t0.Add(3 * time.Second),
		Steps: []store.Step{{Name: "serve", Job: "job-steps-s1"},
			{Name: `dl "ünï"`, Job: "job-steps-s2", After: "serve", When: store.StepWhenRunning}}}
	mustCreateJob(t, s, stepped)
	checkJob(t, "job with steps", getJob(t, s, stepped.ID), stepped)
	if err := s.CreateJob(context.Background(), store.Job{ID: "job-both", Phase: store.PhasePending,
		Matrix: full.Matrix, Steps: stepped.Steps}); err == nil {
		t.Errorf("CreateJob of a job with both steps and a matrix: no error")
	}
	if err := s.DeleteJob(context.Background(), stepped.ID); err != nil {
		t.Fatalf("DeleteJob: %v", err)
	}

	// Listings return the same.
	js := listJobs(t, s, store.JobFilter{})
	if got := jobIDs(js); !equalStrings(got, []string{"job-full", "job-minimal", "job-empty"}) {
		t.Fatalf("Jobs = %v", got)
	}
	checkJob(t, "listed full job", js[0], full)
	checkJob(t, "listed minimal job", js[1], minimal)

	// A zero CreatedAt is the time of creation.
	mustCreateJob(t, s, store.Job{ID: "job-now", Phase: store.PhasePending})
	now := getJob(t, s, "job-now")
	if now.CreatedAt.Before(before) || now.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("job created with a zero CreatedAt has CreatedAt %v, want now", now.CreatedAt)
	}
}

func testCreateJobErrors(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	orig := fullJob("j1")
	mustCreateJob(t, s, orig)
	again := fullJob("j1")
	again.Owner, again.Phase = "mallory", store.PhasePending
	checkInvalid(t, "CreateJob with an existing id", s.CreateJob(ctx, again))
	checkJob(t, "job after a second CreateJob with its id", getJob(t, s, "j1"), orig)

	for _, j := range []store.Job{
		{ID: "", Phase: store.PhasePending},
		{ID: "j2"},
		{ID: "j3", Phase: "RUNNING"},
		{ID: "j4", Phase: "pending"},
	} {
		checkInvalid(t, fmt.Sprintf("CreateJob(id %q, phase %q)", j.ID, j.Phase), s.CreateJob(ctx, j))
	}
	if got := jobIDs(listJobs(t, s, store.JobFilter{Phases: store.Phases})); !equalStrings(got, []string{"j1"}) {
		t.Errorf("after refused CreateJobs: jobs %v, want [j1]", got)
	}
}

func testJobNotFound(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.Job(ctx, "nope")
	checkNotFound(t, "Job of an unknown id", err)
	called := false
	_, err = s.UpdateJob(ctx, "nope", func(j *store.Job) error { called = true; return nil })
	checkNotFound(t, "UpdateJob of an unknown id", err)
	if called {
		t.Error("UpdateJob of an unknown id called fn")
	}
	checkNotFound(t, "DeleteJob of an unknown id", s.DeleteJob(ctx, "nope"))
	if js := listJobs(t, s, store.JobFilter{Phases: store.Phases}); len(js) != 0 {
		t.Errorf("calls on unknown ids created jobs %v", jobIDs(js))
	}

	mustCreateJob(t, s, store.Job{ID: "j", Phase: store.PhasePending, CreatedAt: t0})
	if err := s.DeleteJob(ctx, "j"); err != nil {
		t.Fatalf("DeleteJob: %v", err)
	}
	_, err = s.Job(ctx, "j")
	checkNotFound(t, "Job after DeleteJob", err)
	checkNotFound(t, "second DeleteJob", s.DeleteJob(ctx, "j"))
	_, err = s.UpdateJob(ctx, "j", func(j *store.Job) error { return nil })
	checkNotFound(t, "UpdateJob after DeleteJob", err)
}

func testUpdateJob(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	orig := store.Job{ID: "j", Owner: "alice", Action: "ping", Phase: store.PhasePending, CreatedAt: t0,
		Params: map[string]string{"count": "3"}, Destruction: t0.Add(time.Hour)}
	mustCreateJob(t, s, orig)
	created := getJob(t, s, "j")

	want := orig
	want.Phase = store.PhaseExecuting
	want.StartedAt = tz(time.Minute)
	want.Agents = []string{"a", "b"}
	want.Params = map[string]string{"count": "3", "size": "64"}
	want.ExecDuration = time.Hour + 999*time.Nanosecond
	want.Destruction = time.Time{}
	calls := 0
	ret, err := s.UpdateJob(ctx, "j", func(j *store.Job) error {
		calls++
		checkJob(t, "job given to fn", *j, orig)
		j.Phase = want.Phase
		j.StartedAt = want.StartedAt
		j.Agents = want.Agents
		j.Params["size"] = "64"
		j.ExecDuration = want.ExecDuration
		j.Destruction = time.Time{}
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateJob: %v", err)
	}
	if calls != 1 {
		t.Errorf("UpdateJob called fn %d times, want 1", calls)
	}
	checkJob(t, "UpdateJob result", ret, want)
	stored := getJob(t, s, "j")
	checkJob(t, "job after UpdateJob", stored, want)
	if !ret.UpdatedAt.Equal(stored.UpdatedAt) {
		t.Errorf("UpdateJob returned UpdatedAt %v, stored %v", ret.UpdatedAt, stored.UpdatedAt)
	}
	if stored.UpdatedAt.Before(created.UpdatedAt) {
		t.Errorf("UpdatedAt went back from %v to %v", created.UpdatedAt, stored.UpdatedAt)
	}

	// fn failing: nothing written, fn's error returned as is.
	fnErr := fmt.Errorf("refused: %w", errors.ErrUnsupported)
	_, err = s.UpdateJob(ctx, "j", func(j *store.Job) error {
		j.Phase = store.PhaseAborted
		j.Params["size"] = "1"
		j.Owner = "mallory"
		return fnErr
	})
	if err != fnErr || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("UpdateJob with fn failing returned %v, want fn's error %v", err, fnErr)
	}
	after := getJob(t, s, "j")
	checkJob(t, "job after a failed update", after, want)
	if !after.UpdatedAt.Equal(stored.UpdatedAt) {
		t.Errorf("failed update changed UpdatedAt from %v to %v", stored.UpdatedAt, after.UpdatedAt)
	}

	// fn leaving an invalid job: an error, nothing written.
	_, err = s.UpdateJob(ctx, "j", func(j *store.Job) error { j.ID = "k"; j.Owner = "mallory"; return nil })
	checkInvalid(t, "UpdateJob changing the id", err)
	_, err = s.UpdateJob(ctx, "j", func(j *store.Job) error { j.Phase = "RUNNING"; j.Owner = "mallory"; return nil })
	checkInvalid(t, "UpdateJob to an invalid phase", err)
	checkJob(t, "job after invalid updates", getJob(t, s, "j"), want)
	if _, err := s.Job(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateJob changing the id to k: Job(k) = %v, want ErrNotFound", err)
	}

	// Clearing: zero times, no params.
	want.StartedAt, want.Params, want.Agents, want.ExecDuration = time.Time{}, nil, nil, 0
	ret, err = s.UpdateJob(ctx, "j", func(j *store.Job) error {
		j.StartedAt, j.Params, j.Agents, j.ExecDuration = time.Time{}, nil, nil, 0
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkJob(t, "UpdateJob result after clearing", ret, want)
	checkJob(t, "job after clearing", getJob(t, s, "j"), want)
}

// testUpdateJobConcurrent: concurrent read-modify-write updates of one job
// are serialised, so no increment is lost.
func testUpdateJobConcurrent(t *testing.T, s store.Store) {
	const workers, each = 20, 5
	ctx := ctxT(t)
	mustCreateJob(t, s, store.Job{ID: "counter", Phase: store.PhaseExecuting, CreatedAt: t0, Params: map[string]string{"n": "0"}})
	mustCreateJob(t, s, store.Job{ID: "other", Phase: store.PhaseExecuting, CreatedAt: t0})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		seen    = make(map[int]int) // value written -> times
		calls   int
		start   = make(chan struct{})
		errs    = make(chan error, workers)
		counter = func(j *store.Job) (int, error) { return strconv.Atoi(j.Params["n"]) }
	)
	for w := range workers {
		wg.Go(func() {
			<-start
			for i := range each {
				id := "counter"
				if w%5 == 0 && i%2 == 0 {
					// Updates of another job go on at the same time.
					if _, err := s.UpdateJob(ctx, "other", func(j *store.Job) error { j.Owner = strconv.Itoa(w); return nil }); err != nil {
						errs <- fmt.Errorf("worker %d: UpdateJob(other): %w", w, err)
						return
					}
				}
				ret, err := s.UpdateJob(ctx, id, func(j *store.Job) error {
					mu.Lock()
					calls++
					mu.Unlock()
					n, err := counter(j)
					if err != nil {
						return err
					}
					j.Params["n"] = strconv.Itoa(n + 1)
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("worker %d: UpdateJob %d: %w", w, i, err)
					return
				}
				n, err := counter(&ret)
				if err != nil {
					errs <- fmt.Errorf("worker %d: result: %w", w, err)
					return
				}
				mu.Lock()
				seen[n]++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	final := getJob(t, s, "counter")
	n, err := counter(&final)
	if err != nil {
		t.Fatal(err)
	}
	if n != workers*each {
		t.Errorf("counter = %d after %d concurrent increments: updates were lost", n, workers*each)
	}
	if calls != workers*each {
		t.Errorf("fn called %d times for %d successful UpdateJob calls", calls, workers*each)
	}
	for i := 1; i <= workers*each; i++ {
		if seen[i] != 1 {
			t.Errorf("UpdateJob returned counter value %d %d times, want once", i, seen[i])
		}
	}
}

// testUpdateJobPanic: a panic in fn writes nothing, reaches the caller,
// and leaves the store usable (no transaction or lock left behind).
func testUpdateJobPanic(t *testing.T, s store.Store) {
	orig := store.Job{ID: "j", Owner: "alice", Phase: store.PhasePending, CreatedAt: t0}
	mustCreateJob(t, s, orig)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("UpdateJob with fn panicking: recovered %v, want the panic \"boom\"", r)
			}
		}()
		s.UpdateJob(ctxT(t), "j", func(j *store.Job) error {
			j.Owner = "mallory"
			panic("boom")
		})
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ret, err := s.UpdateJob(ctx, "j", func(j *store.Job) error { j.Phase = store.PhaseQueued; return nil })
	if err != nil {
		t.Fatalf("UpdateJob after a panicking update: %v", err)
	}
	want := orig
	want.Phase = store.PhaseQueued
	checkJob(t, "job after a panicking update", ret, want)
	if err := s.CreateJob(ctx, store.Job{ID: "k", Phase: store.PhasePending}); err != nil {
		t.Errorf("CreateJob after a panicking update: %v", err)
	}
}

func testJobsFilter(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	type def struct {
		id, owner string
		phase     store.Phase
		at        time.Duration
	}
	// Created in this order: neither creation order nor id order is
	// CreatedAt order. a2 and b1 have the same CreatedAt.
	for _, d := range []def{
		{"b3", "bob", store.PhaseArchived, 6 * time.Minute},
		{"b1", "bob", store.PhaseExecuting, 2 * time.Minute},
		{"a4", "alice", store.PhaseQueued, 5 * time.Minute},
		{"a1", "alice", store.PhasePending, 1 * time.Minute},
		{"b2", "bob", store.PhaseError, 4 * time.Minute},
		{"a3", "alice", store.PhaseArchived, 3 * time.Minute},
		{"a2", "alice", store.PhaseCompleted, 2 * time.Minute},
	} {
		mustCreateJob(t, s, store.Job{ID: d.id, Owner: d.owner, Phase: d.phase, CreatedAt: t0.Add(d.at).In(zone)})
	}
	for _, c := range []struct {
		name string
		f    store.JobFilter
		want []string
	}{
		{"all but archived", store.JobFilter{}, []string{"a1", "a2", "b1", "b2", "a4"}},
		{"owner", store.JobFilter{Owner: "alice"}, []string{"a1", "a2", "a4"}},
		{"unknown owner", store.JobFilter{Owner: "carol"}, []string{}},
		{"archived", store.JobFilter{Phases: []store.Phase{store.PhaseArchived}}, []string{"a3", "b3"}},
		{"two phases", store.JobFilter{Phases: []store.Phase{store.PhaseArchived, store.PhaseCompleted}}, []string{"a2", "a3", "b3"}},
		{"phase without jobs", store.JobFilter{Phases: []store.Phase{store.PhaseHeld}}, []string{}},
		{"owner and phase", store.JobFilter{Owner: "bob", Phases: []store.Phase{store.PhaseArchived}}, []string{"b3"}},
		{"every phase", store.JobFilter{Phases: store.Phases}, []string{"a1", "a2", "b1", "a3", "b2", "a4", "b3"}},
		{"after (strictly)", store.JobFilter{After: t0.Add(2 * time.Minute)}, []string{"b2", "a4"}},
		{"after, just before", store.JobFilter{After: t0.Add(2*time.Minute - time.Microsecond)}, []string{"a2", "b1", "b2", "a4"}},
		{"after, other zone", store.JobFilter{After: t0.Add(4 * time.Minute).In(zone)}, []string{"a4"}},
		{"last 2", store.JobFilter{Last: 2}, []string{"b2", "a4"}},
		{"last 3 (ties by id)", store.JobFilter{Last: 3}, []string{"b1", "b2", "a4"}},
		{"last more than there are", store.JobFilter{Last: 100}, []string{"a1", "a2", "b1", "b2", "a4"}},
		{"limit", store.JobFilter{Limit: 2}, []string{"a1", "a2"}},
		{"limit 3 (ties by id)", store.JobFilter{Limit: 3}, []string{"a1", "a2", "b1"}},
		{"last then limit", store.JobFilter{Last: 4, Limit: 2}, []string{"a2", "b1"}},
		{"limit above last", store.JobFilter{Last: 2, Limit: 10}, []string{"b2", "a4"}},
		{"negative last and limit", store.JobFilter{Last: -1, Limit: -1}, []string{"a1", "a2", "b1", "b2", "a4"}},
		{"owner, after, last", store.JobFilter{Owner: "alice", After: t0.Add(time.Minute), Last: 1}, []string{"a4"}},
		{"everything", store.JobFilter{Owner: "bob", Phases: store.Phases, After: t0, Last: 2, Limit: 1}, []string{"b2"}},
	} {
		if got := jobIDs(listJobs(t, s, c.f)); !equalStrings(got, c.want) {
			t.Errorf("Jobs(%s) = %v, want %v", c.name, got, c.want)
		}
	}
	_, err := s.Jobs(ctx, store.JobFilter{Phases: []store.Phase{store.PhaseQueued, "RUNNING"}})
	checkInvalid(t, "Jobs with an invalid phase", err)
}

// testJobsFilterTests checks the filters of tests as first-class things:
// RUNID, a matrix job's children (Parent), a label and a definition.
func testJobsFilterTests(t *testing.T, s store.Store) {
	type def struct {
		id, runID, parent, definition, action string
		labels                                []string
	}
	for i, d := range []def{
		{id: "m1", runID: "w48", labels: []string{"campaign=w48", "site=UNL"}, definition: "nightly", action: "download"},
		{id: "m1-a", runID: "w48", parent: "m1", definition: "nightly"},
		{id: "m1-b", runID: "w48", parent: "m1", definition: "nightly"},
		{id: "m2", runID: "w49", labels: []string{"campaign=w49"}, definition: "nightly"},
		{id: "m2-a", runID: "w49", parent: "m2"},
		{id: "p1", runID: "w48", labels: []string{"site=UNL"}, action: "download"},
		{id: "p2", labels: []string{"campaign=w48x"}, definition: "nightly2"},
	} {
		mustCreateJob(t, s, store.Job{ID: d.id, RunID: d.runID, Parent: d.parent, Labels: d.labels, Action: d.action,
			Definition: d.definition, Phase: store.PhasePending, CreatedAt: t0.Add(time.Duration(i) * time.Minute)})
	}
	for _, c := range []struct {
		name string
		f    store.JobFilter
		want []string
	}{
		{"jobs without a parent", store.JobFilter{}, []string{"m1", "m2", "p1", "p2"}},
		{"children of m1", store.JobFilter{Parent: "m1"}, []string{"m1-a", "m1-b"}},
		{"children of a job without", store.JobFilter{Parent: "p1"}, []string{}},
		{"run id", store.JobFilter{RunID: "w48"}, []string{"m1", "p1"}},
		{"run id, children", store.JobFilter{RunID: "w49", Parent: "m2"}, []string{"m2-a"}},
		{"label", store.JobFilter{Label: "campaign=w48"}, []string{"m1"}},
		{"label on two jobs", store.JobFilter{Label: "site=UNL"}, []string{"m1", "p1"}},
		{"label prefix is no match", store.JobFilter{Label: "campaign=w4"}, []string{}},
		{"definition", store.JobFilter{Definition: "nightly"}, []string{"m1", "m2"}},
		{"definition and label", store.JobFilter{Definition: "nightly", Label: "campaign=w49"}, []string{"m2"}},
		{"run id and label", store.JobFilter{RunID: "w48", Label: "campaign=w49"}, []string{}},
		{"action", store.JobFilter{Action: "download"}, []string{"m1", "p1"}},
		{"action and run id", store.JobFilter{Action: "download", RunID: "w49"}, []string{}},
		{"action of none", store.JobFilter{Action: "upload"}, []string{}},
	} {
		if got := jobIDs(listJobs(t, s, c.f)); !equalStrings(got, c.want) {
			t.Errorf("Jobs(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}

func testActiveJobs(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	destr := t0.Add(time.Hour)
	jobs := []struct {
		id     string
		phase  store.Phase
		destr  bool
		active bool
	}{
		{"pending", store.PhasePending, false, false},
		{"queued", store.PhaseQueued, false, true},
		{"executing", store.PhaseExecuting, false, true},
		{"completed", store.PhaseCompleted, false, false},
		{"error", store.PhaseError, false, false},
		{"aborted", store.PhaseAborted, false, false},
		{"held", store.PhaseHeld, false, false},
		{"archived", store.PhaseArchived, false, false},
		{"completed-destr", store.PhaseCompleted, true, true},
		{"pending-destr", store.PhasePending, true, true},
		{"aborted-destr", store.PhaseAborted, true, true},
		{"executing-destr", store.PhaseExecuting, true, true},
		{"archived-destr", store.PhaseArchived, true, false},
	}
	var want []string
	for i, j := range jobs {
		job := store.Job{ID: j.id, Phase: j.phase, CreatedAt: t0.Add(-time.Duration(i) * time.Second)}
		if j.destr {
			job.Destruction = destr
		}
		mustCreateJob(t, s, job)
		if j.active {
			want = append([]string{j.id}, want...) // oldest first
		}
	}
	got, err := s.ActiveJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ids := jobIDs(got); !equalStrings(ids, want) {
		t.Errorf("ActiveJobs = %v, want %v", ids, want)
	}
	for _, j := range got {
		if j.ID == "completed-destr" {
			checkJob(t, "active job", j, store.Job{ID: j.ID, Phase: store.PhaseCompleted, CreatedAt: t0.Add(-8 * time.Second), Destruction: destr})
		}
	}
}

// fullRun has every field set.
func fullRun(jobID, agentID string) store.Run {
	return store.Run{
		JobID:     jobID,
		AgentID:   agentID,
		State:     store.RunSucceeded,
		ExitCode:  0,
		Error:     "",
		StartedAt: tz(time.Minute),
		EndedAt:   tz(2 * time.Minute),
		Stdout:    "line 1\nline 2 ünï\n",
		Stderr:    "warning: \t<&>\n",
		// Compact, keys out of order, a number JSON would reformat.
		Metrics: []byte(`{"z":1,"a":{"b":[1,2.50,1e3,"x\u00e9"]},"s":"ü","n":null}`),
		Files: []store.ResultFile{
			{Name: "out.txt", Size: 12, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Path: jobID + "/" + agentID + "/out.txt"},
			{Name: "trace.pcap", Size: 1 << 40, SHA256: "00", Path: jobID + "/" + agentID + "/trace.pcap"},
		},
	}
}

func testRuns(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustCreateJob(t, s, store.Job{ID: "j", Phase: store.PhaseExecuting, CreatedAt: t0})
	before := time.Now().Add(-time.Second)
	full := fullRun("j", "a")
	minimal := store.Run{JobID: "j", AgentID: "b", State: store.RunDispatched, ExitCode: -1}
	failed := store.Run{JobID: "j", AgentID: "c", State: store.RunFailed, ExitCode: 2, Error: "exit status 2",
		StartedAt: tz(time.Minute), EndedAt: tz(time.Hour), Metrics: []byte(`{}`), Files: []store.ResultFile{}}
	// Inserted out of order; listed by AgentID.
	for _, r := range []store.Run{failed, full, minimal} {
		mustPutRun(t, s, r)
	}
	after := time.Now().Add(time.Second)
	rs := listRuns(t, s, "j")
	if len(rs) != 3 {
		t.Fatalf("Runs = %+v, want 3 runs", rs)
	}
	checkRun(t, "full run", rs[0], full)
	checkRun(t, "minimal run", rs[1], minimal)
	checkRun(t, "failed run", rs[2], failed)
	for _, r := range rs {
		if r.UpdatedAt.Before(before) || r.UpdatedAt.After(after) {
			t.Errorf("run %s: UpdatedAt = %v, want the time of PutRun", r.AgentID, r.UpdatedAt)
		}
	}

	// PutRun replaces.
	replaced := store.Run{JobID: "j", AgentID: "a", State: store.RunRunning, ExitCode: -1, StartedAt: tz(3 * time.Minute), Stdout: "new"}
	mustPutRun(t, s, replaced)
	rs = listRuns(t, s, "j")
	if len(rs) != 3 {
		t.Fatalf("after replacing run a: %d runs, want 3", len(rs))
	}
	checkRun(t, "replaced run", rs[0], replaced)
	checkRun(t, "other run after replacing", rs[1], minimal)

	// Errors.
	checkNotFound(t, "PutRun for an unknown job", s.PutRun(ctx, fullRun("nope", "a")))
	checkInvalid(t, "PutRun with invalid metrics", s.PutRun(ctx, store.Run{JobID: "j", AgentID: "b", Metrics: []byte(`{"a":`)}))
	checkInvalid(t, "PutRun without an agent", s.PutRun(ctx, store.Run{JobID: "j", State: store.RunRunning}))
	checkInvalid(t, "PutRun without a job", s.PutRun(ctx, store.Run{AgentID: "a", State: store.RunRunning}))
	checkRun(t, "run b after a refused PutRun", listRuns(t, s, "j")[1], minimal)
	if rs := listRuns(t, s, "nope"); len(rs) != 0 {
		t.Errorf("Runs of an unknown job = %+v", rs)
	}

	// Run reads one; UnfinishedRuns counts.
	one, err := s.Run(ctx, "j", "a")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkRun(t, "Run", one, replaced)
	_, err = s.Run(ctx, "j", "zz")
	checkNotFound(t, "Run of an unknown agent", err)
	total, unfinished, err := s.UnfinishedRuns(ctx, "j")
	if err != nil || total != 3 || unfinished != 2 { // a running, b dispatched, c failed
		t.Errorf("UnfinishedRuns = %d, %d, %v; want 3, 2", total, unfinished, err)
	}
	mustPutRun(t, s, store.Run{JobID: "j", AgentID: "b", State: store.RunSucceeded, ExitCode: 0})
	if total, unfinished, err = s.UnfinishedRuns(ctx, "j"); err != nil || total != 3 || unfinished != 1 {
		t.Errorf("UnfinishedRuns after b finished = %d, %d, %v; want 3, 1", total, unfinished, err)
	}
	if total, unfinished, err = s.UnfinishedRuns(ctx, "nope"); err != nil || total != 0 || unfinished != 0 {
		t.Errorf("UnfinishedRuns of an unknown job = %d, %d, %v", total, unfinished, err)
	}
}

// testAgentRuns: AgentRuns lists an agent's unfinished runs over every
// job, by job id; UnfinishedRuns counts every unfinished state.
func testAgentRuns(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for _, id := range []string{"j2", "j1", "j3"} {
		mustCreateJob(t, s, store.Job{ID: id, Phase: store.PhaseExecuting, CreatedAt: t0})
	}
	for _, r := range []store.Run{
		{JobID: "j2", AgentID: "a", State: store.RunQueued, ExitCode: -1},
		{JobID: "j1", AgentID: "a", State: store.RunRunning, ExitCode: -1},
		{JobID: "j3", AgentID: "a", State: store.RunSkipped, ExitCode: -1, Error: "not connected at RUN"},
		{JobID: "j3", AgentID: "b", State: store.RunWaiting, ExitCode: -1},
		{JobID: "j1", AgentID: "b", State: store.RunDispatched, ExitCode: -1},
		{JobID: "j2", AgentID: "b", State: store.RunLost, ExitCode: -1},
	} {
		mustPutRun(t, s, r)
	}
	for agent, want := range map[string][]string{"a": {"j1/running", "j2/queued"}, "b": {"j1/dispatched", "j3/waiting"}, "c": nil} {
		rs, err := s.AgentRuns(ctx, agent)
		if err != nil {
			t.Fatalf("AgentRuns(%s): %v", agent, err)
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.JobID+"/"+string(r.State))
		}
		if !equalStrings(got, want) {
			t.Errorf("AgentRuns(%s) = %v, want %v", agent, got, want)
		}
	}
	for job, want := range map[string][2]int{"j1": {2, 2}, "j2": {2, 1}, "j3": {2, 1}} {
		total, unfinished, err := s.UnfinishedRuns(ctx, job)
		if err != nil || total != want[0] || unfinished != want[1] {
			t.Errorf("UnfinishedRuns(%s) = %d, %d, %v; want %d, %d", job, total, unfinished, err, want[0], want[1])
		}
	}
}

func testDeleteJobDeletesRuns(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustCreateJob(t, s, store.Job{ID: "j1", Phase: store.PhaseCompleted, CreatedAt: t0})
	mustCreateJob(t, s, store.Job{ID: "j2", Phase: store.PhaseCompleted, CreatedAt: t0.Add(time.Second)})
	mustPutRun(t, s, fullRun("j1", "a"))
	mustPutRun(t, s, fullRun("j1", "b"))
	keep := fullRun("j2", "a")
	mustPutRun(t, s, keep)
	if err := s.DeleteJob(ctx, "j1"); err != nil {
		t.Fatalf("DeleteJob: %v", err)
	}
	if rs := listRuns(t, s, "j1"); len(rs) != 0 {
		t.Errorf("runs of the deleted job remain: %+v", rs)
	}
	rs := listRuns(t, s, "j2")
	if len(rs) != 1 {
		t.Fatalf("runs of the other job: %+v, want 1", rs)
	}
	checkRun(t, "run of the other job", rs[0], keep)
	// A new job with the same id starts without runs.
	mustCreateJob(t, s, store.Job{ID: "j1", Phase: store.PhasePending, CreatedAt: t0})
	if rs := listRuns(t, s, "j1"); len(rs) != 0 {
		t.Errorf("new job with a deleted job's id has runs %+v", rs)
	}
}

func testClearResults(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustCreateJob(t, s, store.Job{ID: "j", Phase: store.PhaseCompleted, CreatedAt: t0})
	mustCreateJob(t, s, store.Job{ID: "k", Phase: store.PhaseCompleted, CreatedAt: t0})
	a, b, c := fullRun("j", "a"), fullRun("j", "b"), fullRun("j", "c")
	b.Files, b.Metrics = nil, nil
	c.Files = c.Files[1:]
	c.State, c.ExitCode, c.Error = store.RunFailed, 1, "exit status 1"
	other := fullRun("k", "a")
	for _, r := range []store.Run{c, a, b, other} {
		mustPutRun(t, s, r)
	}
	got, err := s.ClearResults(ctx, "j")
	if err != nil {
		t.Fatalf("ClearResults: %v", err)
	}
	want := append(slices.Clone(a.Files), c.Files...)
	if !slices.Equal(got, want) {
		t.Errorf("ClearResults returned %+v, want %+v (the files of runs a, b, c in order)", got, want)
	}
	rs := listRuns(t, s, "j")
	if len(rs) != 3 {
		t.Fatalf("after ClearResults: %d runs, want 3", len(rs))
	}
	for i, r := range []store.Run{a, b, c} {
		r.Stdout, r.Stderr, r.Files = "", "", nil // Metrics kept
		checkRun(t, "cleared run "+r.AgentID, rs[i], r)
	}
	if rs := listRuns(t, s, "k"); len(rs) != 1 {
		t.Errorf("runs of the other job: %+v", rs)
	} else {
		checkRun(t, "run of the other job", rs[0], other)
	}
	if _, err := s.Job(ctx, "j"); err != nil {
		t.Errorf("Job after ClearResults: %v", err)
	}
	if got, err := s.ClearResults(ctx, "j"); err != nil || len(got) != 0 {
		t.Errorf("second ClearResults = %+v, %v; want nothing", got, err)
	}
	if got, err := s.ClearResults(ctx, "nope"); err != nil || len(got) != 0 {
		t.Errorf("ClearResults of an unknown job = %+v, %v; want nothing, nil", got, err)
	}
}

func testAgents(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	if as := listAgents(t, s); len(as) != 0 {
		t.Fatalf("new store has agents %+v", as)
	}
	first := store.Agent{ID: "a", Labels: []string{"role=client", "site=UNL"},
		Actions: []byte(`[{"name":"iperf","params":[{"name":"duration","type":"int"}]},{"name":"ping"}]`),
		Version: "1.2.3", Node: "n1", Connected: true, FirstSeen: tz(0), LastSeen: tz(0), RemoteAddr: "10.0.0.1:50000"}
	mustPutAgent(t, s, first)
	checkAgent(t, "new agent", agentByID(t, s, "a"), first)

	// Replacing keeps FirstSeen and replaces everything else.
	second := store.Agent{ID: "a", Version: "1.3", Node: "n2", Connected: false, FirstSeen: tz(time.Hour), LastSeen: tz(2 * time.Hour)}
	mustPutAgent(t, s, second)
	want := second
	want.FirstSeen = first.FirstSeen
	checkAgent(t, "replaced agent", agentByID(t, s, "a"), want)

	// Zero times stay zero; an agent first stored without FirstSeen gets
	// the first one given.
	zero := store.Agent{ID: "z", Node: "n1"}
	mustPutAgent(t, s, zero)
	checkAgent(t, "agent with zero times", agentByID(t, s, "z"), zero)
	zero.FirstSeen, zero.LastSeen, zero.Connected = tz(time.Minute), tz(time.Minute), true
	mustPutAgent(t, s, zero)
	checkAgent(t, "agent first seen later", agentByID(t, s, "z"), zero)

	// Listed by id, bytewise.
	for _, id := range []string{"b", "a-1", "Z", "a_1", "B"} {
		mustPutAgent(t, s, store.Agent{ID: id})
	}
	var ids []string
	for _, a := range listAgents(t, s) {
		ids = append(ids, a.ID)
	}
	if want := []string{"B", "Z", "a", "a-1", "a_1", "b", "z"}; !equalStrings(ids, want) {
		t.Errorf("Agents ids = %v, want %v", ids, want)
	}

	checkInvalid(t, "PutAgent without an id", s.PutAgent(ctx, store.Agent{Node: "n1"}))
	checkInvalid(t, "PutAgent with invalid actions", s.PutAgent(ctx, store.Agent{ID: "a", Actions: []byte(`[{`)}))
	checkAgent(t, "agent after a refused PutAgent", agentByID(t, s, "a"), want)
}

func testDisconnectAgents(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	agents := []store.Agent{
		{ID: "x1", Labels: []string{"k=v"}, Actions: []byte(`[]`), Version: "1", Node: "n1", Connected: true,
			FirstSeen: tz(-time.Hour), LastSeen: tz(0), RemoteAddr: "[::1]:1"},
		{ID: "x2", Node: "n1", Connected: true, FirstSeen: tz(0), LastSeen: tz(time.Minute)},
		{ID: "x3", Node: "n1", Connected: false, FirstSeen: tz(-2 * time.Hour), LastSeen: tz(-time.Hour)},
		{ID: "y1", Node: "n2", Connected: true, FirstSeen: tz(0), LastSeen: tz(0)},
		{ID: "y2", Node: "n10", Connected: true, FirstSeen: tz(0), LastSeen: tz(0)},
	}
	for _, a := range agents {
		mustPutAgent(t, s, a)
	}
	at := tz(time.Hour)
	if err := s.DisconnectAgents(ctx, "n1", at); err != nil {
		t.Fatalf("DisconnectAgents: %v", err)
	}
	want := slices.Clone(agents)
	for i := range 2 {
		want[i].Connected = false
		want[i].LastSeen = at
	}
	got := listAgents(t, s)
	if len(got) != len(want) {
		t.Fatalf("Agents = %+v, want %d", got, len(want))
	}
	for i := range want {
		checkAgent(t, "after disconnecting n1: agent "+want[i].ID, got[i], want[i])
	}
	// A node without agents: nothing changes.
	if err := s.DisconnectAgents(ctx, "n3", tz(5*time.Hour)); err != nil {
		t.Fatalf("DisconnectAgents(n3): %v", err)
	}
	got = listAgents(t, s)
	for i := range want {
		checkAgent(t, "after disconnecting n3: agent "+want[i].ID, got[i], want[i])
	}
}

func testDeleteAgent(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	kept := store.Agent{ID: "b", Labels: []string{"role=client"}, Node: "n1", FirstSeen: tz(0), LastSeen: tz(time.Minute)}
	mustPutAgent(t, s, store.Agent{ID: "a", Labels: []string{"role=client"}, Node: "n1", FirstSeen: tz(-time.Hour), LastSeen: tz(0)})
	mustPutAgent(t, s, kept)
	mustCreateJob(t, s, store.Job{ID: "j", Phase: store.PhaseCompleted, CreatedAt: t0, Agents: []string{"a", "b"}})
	mustPutRun(t, s, fullRun("j", "a"))
	before := allAudit(t, s)

	forget := ev("agent.forget", "agent:a")
	if err := s.DeleteAgent(ctx, "a", forget); err != nil {
		t.Fatalf("DeleteAgent(a): %v", err)
	}
	if got := listAgents(t, s); len(got) != 1 {
		t.Fatalf("agents after deleting a: %+v, want only b", got)
	} else {
		checkAgent(t, "the other agent", got[0], kept)
	}
	// The agent's past runs, and the job's record of its targets, are history.
	if rs := listRuns(t, s, "j"); len(rs) != 1 {
		t.Errorf("runs of j after deleting a: %+v, want a's run", rs)
	} else {
		checkRun(t, "a's run", rs[0], fullRun("j", "a"))
	}
	if j := getJob(t, s, "j"); !slices.Equal(j.Agents, []string{"a", "b"}) {
		t.Errorf("job j's agents = %v, want [a b]", j.Agents)
	}
	after := allAudit(t, s)
	if len(after) != len(before)+1 {
		t.Fatalf("audit has %d events after DeleteAgent, want %d", len(after), len(before)+1)
	}
	got := after[len(after)-1]
	if got.Actor != forget.Actor || got.Action != forget.Action || got.Target != forget.Target || got.Detail != forget.Detail {
		t.Errorf("audit event = %+v, want %+v", got, forget)
	}

	// Unknown (or deleted already): ErrNotFound, and nothing audited.
	checkNotFound(t, "DeleteAgent(a) again", s.DeleteAgent(ctx, "a", forget))
	checkNotFound(t, "DeleteAgent(unknown)", s.DeleteAgent(ctx, "unknown", forget))
	if n := len(allAudit(t, s)); n != len(after) {
		t.Errorf("audit has %d events after refused deletions, want %d", n, len(after))
	}

	// Seen again: a new agent, whose first sighting is now.
	again := store.Agent{ID: "a", Node: "n2", Connected: true, FirstSeen: tz(time.Hour), LastSeen: tz(time.Hour)}
	mustPutAgent(t, s, again)
	checkAgent(t, "agent a seen again", agentByID(t, s, "a"), again)
}

// jobCalls are the JobStore calls testUseAfterClose and
// testCanceledContext make; each would change or read something if it
// succeeded.
func jobCalls(s store.Store, ctx context.Context) map[string]func() error {
	return map[string]func() error{
		"CreateJob": func() error {
			return s.CreateJob(ctx, store.Job{ID: "new", Phase: store.PhasePending, CreatedAt: t0})
		},
		"Job":  func() error { _, err := s.Job(ctx, "keep"); return err },
		"Jobs": func() error { _, err := s.Jobs(ctx, store.JobFilter{}); return err },
		"UpdateJob": func() error {
			_, err := s.UpdateJob(ctx, "keep", func(j *store.Job) error { j.Phase = store.PhaseAborted; return nil })
			return err
		},
		"DeleteJob":  func() error { return s.DeleteJob(ctx, "keep") },
		"ActiveJobs": func() error { _, err := s.ActiveJobs(ctx); return err },
		"PutRun":     func() error { return s.PutRun(ctx, store.Run{JobID: "keep", AgentID: "new", State: store.RunRunning}) },
		"Runs":       func() error { _, err := s.Runs(ctx, "keep"); return err },
		"AgentRuns":  func() error { _, err := s.AgentRuns(ctx, "a"); return err },
		"ClearResults": func() error {
			_, err := s.ClearResults(ctx, "keep")
			return err
		},
		"PutAgent":         func() error { return s.PutAgent(ctx, store.Agent{ID: "new"}) },
		"Agents":           func() error { _, err := s.Agents(ctx); return err },
		"DisconnectAgents": func() error { return s.DisconnectAgents(ctx, "n1", t0) },
		"DeleteAgent":      func() error { return s.DeleteAgent(ctx, "a", ev("agent.forget", "agent:a")) },
	}
}

// jobFixture stores what jobCalls would change.
func jobFixture(t *testing.T, s store.Store) {
	t.Helper()
	mustCreateJob(t, s, store.Job{ID: "keep", Phase: store.PhaseExecuting, CreatedAt: t0})
	mustPutRun(t, s, fullRun("keep", "a"))
	mustPutAgent(t, s, store.Agent{ID: "a", Node: "n1", Connected: true, LastSeen: t0})
}

// checkJobFixture checks that jobFixture's data is unchanged.
func checkJobFixture(t *testing.T, s store.Store) {
	t.Helper()
	if js := listJobs(t, s, store.JobFilter{Phases: store.Phases}); len(js) != 1 {
		t.Errorf("jobs %v, want [keep]", jobIDs(js))
	} else {
		checkJob(t, "job", js[0], store.Job{ID: "keep", Phase: store.PhaseExecuting, CreatedAt: t0})
	}
	if rs := listRuns(t, s, "keep"); len(rs) != 1 {
		t.Errorf("runs %+v, want 1", rs)
	} else {
		checkRun(t, "run", rs[0], fullRun("keep", "a"))
	}
	if as := listAgents(t, s); len(as) != 1 {
		t.Errorf("agents %+v, want 1", as)
	} else {
		checkAgent(t, "agent", as[0], store.Agent{ID: "a", Node: "n1", Connected: true, LastSeen: t0})
	}
}
