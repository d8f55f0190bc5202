package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrNotFound is returned for a job that does not exist.
var ErrNotFound = errors.New("store: not found")

// Phase is a UWS 1.1 execution phase.
type Phase string

// UWS 1.1 phases.
const (
	PhasePending   Phase = "PENDING"
	PhaseQueued    Phase = "QUEUED"
	PhaseExecuting Phase = "EXECUTING"
	PhaseCompleted Phase = "COMPLETED"
	PhaseError     Phase = "ERROR"
	PhaseAborted   Phase = "ABORTED"
	PhaseUnknown   Phase = "UNKNOWN"
	PhaseHeld      Phase = "HELD"
	PhaseSuspended Phase = "SUSPENDED"
	PhaseArchived  Phase = "ARCHIVED"
)

// Phases lists every phase.
var Phases = []Phase{PhasePending, PhaseQueued, PhaseExecuting, PhaseCompleted, PhaseError,
	PhaseAborted, PhaseUnknown, PhaseHeld, PhaseSuspended, PhaseArchived}

// Valid reports whether p is a UWS phase.
func (p Phase) Valid() bool {
	for _, q := range Phases {
		if p == q {
			return true
		}
	}
	return false
}

// Final reports whether a job in phase p will not run any more.
func (p Phase) Final() bool {
	return p == PhaseCompleted || p == PhaseError || p == PhaseAborted || p == PhaseArchived
}

// Job is a UWS job: an action to run on a set of agents.
type Job struct {
	ID      string // assigned by the caller, unique
	RunID   string // the client's RUNID, may be ""
	Owner   string // sub of the creator
	Action  string
	Targets string            // as given: agent ids or a label selector
	Params  map[string]string // validated action parameters
	Phase   Phase
	// Require is which targets must run: "" every one (an offline one is
	// waited for, then lost), RequireAvailable only those connected at RUN
	// (the others are skipped).
	Require string
	// Agents are the agents the job targets, set at RUN: the ids it names,
	// or every known agent its selector matches, connected or not. Each
	// has a run recording its fate.
	Agents       []string
	CreatedAt    time.Time
	StartedAt    time.Time     // zero: not started
	EndedAt      time.Time     // zero: not ended
	Quote        time.Time     // zero: no estimate
	Destruction  time.Time     // zero: never
	ExecDuration time.Duration // 0: unlimited
	ErrorType    string        // "transient" or "fatal" when ErrorSummary is set
	ErrorSummary string
	// Parent is the id of the matrix job this job is one combination of,
	// or of the test this job is one step of ("" for a job a client
	// created). Listings show only jobs without a
	// parent unless JobFilter.Parent names one.
	Parent string
	// Matrix lists the parameters given several values, in the order
	// given, on a matrix job: each combination of their values is a child
	// job (its Parent is this job) whose Params hold one value of each.
	// Empty on every other job.
	Matrix []MatrixParam
	// Steps lists the steps of a test of several steps, in order: each
	// is a child job (its Parent is this job; a plain or a matrix job)
	// started when its ordering allows. Empty on every other job; a job
	// has Steps or Matrix, not both.
	Steps []Step
	// Labels tag the job ("key=value"), for finding it again
	// (JobFilter.Label).
	Labels []string
	// Definition and DefinitionVersion name the saved test definition
	// the job was started from ("" and 0: none).
	Definition        string
	DefinitionVersion int
	// UpdatedAt is set by the store on every write.
	UpdatedAt time.Time
}

// MatrixParam is a parameter of a matrix job and its values, in order.
type MatrixParam struct {
	Name   string
	Values []string
}

// Step is one step of a test of several steps (Job.Steps).
type Step struct {
	Name string // unique in the job
	Job  string // the child job that runs it
	// After names an earlier step this one waits for ("" none), and
	// When what it waits for: StepWhenRunning or StepWhenFinished.
	After, When string
}

// Step orderings (Step.When).
const (
	// StepWhenRunning starts a step once the step it follows is
	// EXECUTING (or has completed).
	StepWhenRunning = "running"
	// StepWhenFinished starts a step once the step it follows has
	// COMPLETED.
	StepWhenFinished = "finished"
)

// RequireAvailable is the Job.Require that runs a job only on the
// targets connected at RUN.
const RequireAvailable = "available"

// JobFilter selects jobs for Jobs.
type JobFilter struct {
	Owner  string    // "" for every owner
	Phases []Phase   // empty: every phase except ARCHIVED (unless listed)
	After  time.Time // zero: no bound; else CreatedAt strictly after
	// Last, if positive, returns only the Last most recently created
	// matching jobs (still ordered oldest first).
	Last int
	// Limit, if positive, caps the result (oldest first); applied after Last.
	Limit int
	// RunID, if set, selects the jobs with this RUNID.
	RunID string
	// Action, if set, selects the jobs of this action.
	Action string
	// Parent "" selects the jobs without a parent (what clients
	// created); a job id selects that matrix job's children.
	Parent string
	// Label, if set, selects the jobs with this label among Labels.
	Label string
	// Definition, if set, selects the jobs started from the saved
	// definition of this name (any version).
	Definition string
}

// RunState is where one agent's part of a job is.
type RunState string

// Run states. Waiting: the agent was not connected at RUN, and the run
// waits for it (up to the lost grace period); queued: the agent is
// connected but runs as many of the action as it declares it may at once,
// and the run waits on the hub for a slot; dispatched: sent to the agent;
// running: the agent reported its start; the rest are final.
const (
	RunWaiting    RunState = "waiting"
	RunQueued     RunState = "queued"
	RunDispatched RunState = "dispatched"
	RunRunning    RunState = "running"
	RunSucceeded  RunState = "succeeded"
	RunFailed     RunState = "failed"
	RunAborted    RunState = "aborted"
	RunTimedOut   RunState = "timed_out"
	RunRejected   RunState = "rejected"
	RunLost       RunState = "lost" // the agent disconnected and did not come back in time
	// RunSkipped: the run was never sent, by choice: the agent was not
	// connected at RUN of a job with RequireAvailable, or (a label
	// selector) it does not offer the action with these parameters.
	RunSkipped RunState = "skipped"
)

// UnfinishedRunStates are the states that are not final.
var UnfinishedRunStates = []RunState{RunWaiting, RunQueued, RunDispatched, RunRunning}

// Final reports whether s is a final state.
func (s RunState) Final() bool { return s != "" && !slices.Contains(UnfinishedRunStates, s) }

// Run is one agent's part of a job.
type Run struct {
	JobID     string
	AgentID   string
	State     RunState
	ExitCode  int // -1: no exit status
	Error     string
	StartedAt time.Time
	EndedAt   time.Time
	Stdout    string          // tail
	Stderr    string          // tail
	Metrics   json.RawMessage // a JSON object or nil
	Files     []ResultFile
	UpdatedAt time.Time // set by the store on every write
}

// ResultFile is an output file of a run, kept in the blob directory at
// Path (relative to it).
type ResultFile struct {
	Name   string
	Size   int64
	SHA256 string
	Path   string
}

// Agent is a host agent the hub has seen.
type Agent struct {
	ID         string
	Labels     []string        // "key=value"
	Actions    json.RawMessage // JSON array of jobproto.Action
	Version    string
	Node       string // node it is (or was last) connected to
	Connected  bool
	FirstSeen  time.Time
	LastSeen   time.Time // connect time while connected, else disconnect time
	RemoteAddr string
}

// JobStore keeps jobs, their runs and the agents seen, and (LeaseStore)
// the lease that lets one node run the job timers. Part of Store.
//
// Round trips: times, and Job.ExecDuration, are kept in UTC with
// microsecond precision (finer parts truncated); zero times stay zero,
// except a zero Job.CreatedAt, which the store sets to the current time.
// Empty Params, Agents, Files and Labels come back nil. Run.Metrics and
// Agent.Actions must be empty or valid JSON; they come back byte for byte
// as given, or nil when empty. Listings ordered by an id order it bytewise.
// Invalid input (an empty id, an invalid phase, invalid JSON) is an error
// that does not wrap ErrUnavailable.
type JobStore interface {
	LeaseStore
	DefinitionStore
	ScheduleStore

	// AppendAudit is Store's: the jobs API records who created, ran,
	// aborted and deleted jobs.
	AppendAudit(ctx context.Context, evs ...AuditEvent) ([]AuditEvent, error)

	// CreateJob stores a new job; an existing ID is an error (not
	// ErrNotFound). ID must not be empty and Phase must be valid.
	CreateJob(ctx context.Context, j Job) error
	// Job returns the job with this id, or ErrNotFound.
	Job(ctx context.Context, id string) (Job, error)
	// Jobs lists jobs matching f, oldest CreatedAt first (ties by ID).
	Jobs(ctx context.Context, f JobFilter) ([]Job, error)
	// UpdateJob reads the job, calls fn with it and, if fn returns nil,
	// writes it back, in one transaction that serialises with other
	// UpdateJob calls on the same job. fn must not change ID. It returns
	// the job as written, ErrNotFound, or fn's error as fn returned it
	// (nothing written). fn is called at most once; a job fn leaves
	// invalid (changed ID, invalid phase) is an error and is not written.
	// If fn panics, nothing is written and the panic goes on.
	UpdateJob(ctx context.Context, id string, fn func(*Job) error) (Job, error)
	// DeleteJob deletes the job and its runs; ErrNotFound if absent.
	DeleteJob(ctx context.Context, id string) error
	// ActiveJobs lists the jobs whose phase is QUEUED or EXECUTING, and
	// those with a destruction time, whatever their phase, except ARCHIVED
	// ones: what the hub re-arms at start.
	ActiveJobs(ctx context.Context) ([]Job, error)

	// PutRun inserts or replaces the run (JobID, AgentID); ErrNotFound if
	// the job does not exist.
	PutRun(ctx context.Context, r Run) error
	// Run returns one run, or ErrNotFound.
	Run(ctx context.Context, jobID, agentID string) (Run, error)
	// UnfinishedRuns counts the job's runs, and those in one of
	// UnfinishedRunStates (zeros for an unknown job).
	UnfinishedRuns(ctx context.Context, jobID string) (total, unfinished int, err error)
	// Runs lists the runs of a job ordered by AgentID (none, and no error,
	// for an unknown job).
	Runs(ctx context.Context, jobID string) ([]Run, error)
	// AgentRuns lists the runs of an agent, over every job, that are in
	// one of UnfinishedRunStates, ordered by JobID.
	AgentRuns(ctx context.Context, agentID string) ([]Run, error)
	// ClearResults empties Stdout, Stderr and Files of every run of the
	// job (at destruction) and returns the files it forgot, in AgentID
	// order (none, and no error, for an unknown job). The outcome (State,
	// ExitCode, Error, the times) and the small Metrics object of each run
	// are kept: a campaign's numbers outlive its files.
	ClearResults(ctx context.Context, jobID string) ([]ResultFile, error)

	// PutAgent inserts or replaces an agent; FirstSeen of an existing
	// agent is kept (unless it is zero).
	PutAgent(ctx context.Context, a Agent) error
	// Agents lists every agent seen, by ID.
	Agents(ctx context.Context) ([]Agent, error)
	// DisconnectAgents marks every agent connected to node as
	// disconnected at t (at start, for agents a crashed node held): it
	// sets Connected false and LastSeen t. Other agents are untouched.
	DisconnectAgents(ctx context.Context, node string, t time.Time) error
	// DeleteAgent forgets an agent seen (the operator decommissioned it)
	// and appends ev to the audit log, in one transaction; ErrNotFound,
	// and nothing appended, if no agent has this id. Runs are kept: the
	// agent's part in past jobs is history. An agent deleted and seen
	// again (PutAgent) is a new agent: its FirstSeen starts over.
	DeleteAgent(ctx context.Context, id string, ev AuditEvent) error
}

// Validate reports whether j can be stored: a non-empty ID and a valid
// Phase.
func (j Job) Validate() error {
	if j.ID == "" {
		return errors.New("store: job id is empty")
	}
	if !j.Phase.Valid() {
		return fmt.Errorf("store: job %q: invalid phase %q", j.ID, j.Phase)
	}
	if len(j.Steps) > 0 && len(j.Matrix) > 0 {
		return fmt.Errorf("store: job %q: has both steps and a matrix", j.ID)
	}
	return nil
}

// Validate reports whether f can be used: every phase in Phases valid.
func (f JobFilter) Validate() error {
	for _, p := range f.Phases {
		if !p.Valid() {
			return fmt.Errorf("store: job filter: invalid phase %q", p)
		}
	}
	return nil
}

// Validate reports whether r can be stored: a non-empty JobID and AgentID,
// and Metrics empty or valid JSON.
func (r Run) Validate() error {
	if r.JobID == "" || r.AgentID == "" {
		return fmt.Errorf("store: run needs a job id and an agent id (got %q, %q)", r.JobID, r.AgentID)
	}
	if len(r.Metrics) > 0 && !json.Valid(r.Metrics) {
		return fmt.Errorf("store: run %s/%s: metrics are not valid JSON", r.JobID, r.AgentID)
	}
	return nil
}

// Validate reports whether a can be stored: a non-empty ID, and Actions
// empty or valid JSON.
func (a Agent) Validate() error {
	if a.ID == "" {
		return errors.New("store: agent id is empty")
	}
	if len(a.Actions) > 0 && !json.Valid(a.Actions) {
		return fmt.Errorf("store: agent %q: actions are not valid JSON", a.ID)
	}
	return nil
}
