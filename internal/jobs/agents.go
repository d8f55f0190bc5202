package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/topic"
)

// Agents is how the state machine reaches the connected agents: the hub
// side of their control channels (internal/jobs/agentlink) implements it,
// for the channels this node holds and, over the cluster bus, those the
// other nodes hold.
//
// No method blocks on an agent or does I/O: the state machine calls them
// while it holds a job's lock. A send queues the message for the agent's
// channel and returns; a message that cannot be queued is not sent (the
// run's lost grace period covers a run that never arrives).
type Agents interface {
	// Connected returns the agents connected now, by id.
	Connected() []Agent
	// Status reports whether the agent is connected, and whether its
	// channel reports job as running.
	Status(agentID, job string) (connected, running bool)
	// SendRun queues run for the agent's current channel, unless that
	// channel was sent this job's run already; it reports whether it
	// queued it.
	SendRun(agentID string, run jobproto.Run) bool
	// SendAbort queues abort for the agent's current channel and reports
	// whether it did.
	SendAbort(agentID string, abort jobproto.Abort) bool
}

// Agent is a connected agent, as its hello declared it.
type Agent struct {
	ID         string
	Labels     []string
	Actions    []jobproto.Action
	Version    string
	RemoteAddr string
	Since      time.Time // connected at (Config.Now)
}

// Action returns the agent's declaration of name, or nil.
func (a *Agent) Action(name string) *jobproto.Action {
	for i := range a.Actions {
		if a.Actions[i].Name == name {
			return &a.Actions[i]
		}
	}
	return nil
}

// noAgents is the Agents of a Manager started without any: none is
// connected.
type noAgents struct{}

func (noAgents) Connected() []Agent                    { return nil }
func (noAgents) Status(string, string) (bool, bool)    { return false, false }
func (noAgents) SendRun(string, jobproto.Run) bool     { return false }
func (noAgents) SendAbort(string, jobproto.Abort) bool { return false }

// agentsOf returns the Agents given to Start.
func (m *Manager) agentsOf() Agents {
	if a := m.agents.Load(); a != nil {
		return *a
	}
	return noAgents{}
}

// connected returns the connected agents, sorted by id.
func (m *Manager) connected() []Agent {
	out := m.agentsOf().Connected()
	sort.Slice(out, func(i, k int) bool { return out[i].ID < out[k].ID })
	return out
}

// What the agent link reports. Each method is called from the channel's
// own goroutine, in the order the agent sent its messages, with no lock
// of the link held; each may take a job's lock and call the store.

// Welcome returns the first message a registered agent is sent.
func (m *Manager) Welcome() jobproto.Welcome {
	return jobproto.Welcome{Type: jobproto.TypeWelcome, Node: m.cfg.NodeID, MaxFileBytes: m.cfg.MaxFileBytes, MaxRunBytes: m.cfg.MaxRunBytes,
		LogChunks: true} // PublishLog takes chunks; agentlink reads them
}

// AgentRunning returns which of the jobs an agent's hello lists as running
// have an unfinished run on that agent: only those count as its running
// jobs (a job it has no run in must not accept its log lines).
func (m *Manager) AgentRunning(agentID string, listed []string) []string {
	ctx, cancel := bgCtx()
	defer cancel()
	var running []string
	for _, j := range listed {
		if r, err := m.st.Run(ctx, j, agentID); err == nil && !r.State.Final() {
			running = append(running, j)
		}
	}
	return running
}

// AgentConnected records that a registered an agent's channel, which
// reports running (from AgentRunning): those runs' lost grace periods
// end, the agent is stored as connected and announced on AgentsTopic. Send
// the agent its Welcome after it, then call ResendRuns.
func (m *Manager) AgentConnected(a Agent, running []string) {
	for _, j := range running {
		m.stopTimer("lost:" + j + "/" + a.ID)
	}
	acts, _ := json.Marshal(a.Actions)
	rec := store.Agent{ID: a.ID, Labels: a.Labels, Actions: acts, Version: cleanText(Truncate(a.Version, 64)), Node: m.cfg.NodeID,
		Connected: true, LastSeen: a.Since, FirstSeen: a.Since, RemoteAddr: a.RemoteAddr}
	ctx, cancel := bgCtx()
	defer cancel()
	unlock := m.lockAgent(a.ID) // ordered with ForgetAgent
	if err := m.st.PutAgent(ctx, rec); err != nil {
		m.log.Error("jobs: record agent", "agent", a.ID, "err", err)
	}
	unlock()
	m.publishAgentEvent("connected", rec, running)
	m.log.Info("jobs: agent connected", "agent", a.ID, "labels", a.Labels, "actions", len(a.Actions))
}

// ResendRuns sends a newly registered agent, in the background, the runs
// dispatched while it was away or whose run message a crash swallowed
// (the agent ignores a run it already has and answers one it finished
// with its stored result), then queues the runs that waited for it and
// sends what its slots allow (admitWaiting).
func (m *Manager) ResendRuns(agentID string) {
	m.goBackground(func() { m.resend(agentID); m.admitWaiting(agentID) })
}

func (m *Manager) resend(agentID string) {
	ctx, cancel := bgCtx()
	defer cancel()
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		return
	}
	agents := m.agentsOf()
	for _, j := range active {
		if j.Phase != store.PhaseExecuting || !slices.Contains(j.Agents, agentID) {
			continue
		}
		// Under the job's lock, so that a dispatch and this re-send do
		// not both send the run (SendRun sends a job's run once per
		// channel).
		unlock := m.lockJob(j.ID)
		runs, err := m.st.Runs(ctx, j.ID)
		if err != nil {
			unlock()
			return
		}
		for _, r := range runs {
			if r.AgentID != agentID {
				continue
			}
			_, running := agents.Status(agentID, j.ID)
			if r.State == store.RunDispatched && !running {
				msg := jobproto.Run{Type: jobproto.TypeRun, Job: j.ID, Action: j.Action, Params: j.Params}
				if j.ExecDuration > 0 {
					msg.Timeout = jobproto.Duration(max(time.Until(j.StartedAt.Add(j.ExecDuration)), time.Second))
				}
				if agents.SendRun(agentID, msg) {
					m.armLost(j.ID, agentID) // a fresh grace period to start it
				}
			}
			// A run the agent started but no longer lists as running
			// (it restarted, and superseded its old connection before the
			// hub saw that one die): it has the grace period to report it.
			if r.State == store.RunRunning && !running {
				m.armLostIfUnarmed(j.ID, agentID)
			}
		}
		unlock()
	}
}

// AgentDisconnected records that the agent's current channel ended (a
// superseded channel is not reported): it is stored as disconnected and
// announced, and its unfinished runs get the lost grace period.
func (m *Manager) AgentDisconnected(a Agent) {
	m.mu.Lock()
	stopped := m.stopped
	m.mu.Unlock()
	acts, _ := json.Marshal(a.Actions)
	rec := store.Agent{ID: a.ID, Labels: a.Labels, Actions: acts, Node: m.cfg.NodeID, Connected: false,
		LastSeen: m.cfg.Now(), FirstSeen: a.Since, RemoteAddr: a.RemoteAddr}
	ctx, cancel := bgCtx()
	defer cancel()
	unlock := m.lockAgent(a.ID) // ordered with ForgetAgent
	if err := m.st.PutAgent(ctx, rec); err != nil {
		m.log.Error("jobs: record agent", "agent", a.ID, "err", err)
	}
	unlock()
	m.publishAgentEvent("disconnected", rec, nil)
	m.log.Info("jobs: agent disconnected", "agent", a.ID)
	if stopped {
		return // the next start re-arms the runs
	}
	m.armLostRunsOf(ctx, a.ID)
}

// RemoteAgentUp reports that another node holds the agent's channel, which
// reports running as its running jobs (the agent link learns it from the
// bus). As for an agent of its own (AgentConnected), those runs' lost
// grace periods end here, if this node runs the timers; the other node
// stored the agent and sends it its runs.
func (m *Manager) RemoteAgentUp(agentID string, running []string) {
	for _, j := range running {
		m.stopTimer("lost:" + j + "/" + agentID)
	}
}

// RemoteAgentGone reports that the agent's channel on another node ended,
// or that node left the cluster: if this node runs the timers, the
// agent's unfinished runs get the lost grace period, as for an agent of
// its own (AgentDisconnected).
func (m *Manager) RemoteAgentGone(agentID string) {
	if !m.HoldsTimerLease() {
		return
	}
	m.goBackground(func() {
		ctx, cancel := bgCtx()
		defer cancel()
		m.armLostRunsOf(ctx, agentID)
	})
}

// armLostRunsOf gives the agent's unfinished runs the lost grace period.
func (m *Manager) armLostRunsOf(ctx context.Context, agentID string) {
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		m.log.Error("jobs: arm the lost runs of an agent", "agent", agentID, "err", err)
		return
	}
	for _, j := range active {
		if j.Phase == store.PhaseExecuting && slices.Contains(j.Agents, agentID) {
			runs, err := m.st.Runs(ctx, j.ID)
			if err != nil {
				continue
			}
			for _, r := range runs {
				if r.AgentID == agentID && !r.State.Final() {
					m.armLost(j.ID, agentID)
				}
			}
		}
	}
}

// agentEvent is published on the agents topic.
type agentEvent struct {
	Event string    `json:"event"` // connected, disconnected, forgotten
	Time  time.Time `json:"time"`
	Agent AgentDoc  `json:"agent"`
}

func (m *Manager) publishAgentEvent(event string, a store.Agent, running []string) {
	if m.cfg.Publisher == nil {
		return
	}
	b, err := json.Marshal(agentEvent{Event: event, Time: m.cfg.Now().UTC(), Agent: agentDoc(a, running)})
	if err != nil {
		return
	}
	m.cfg.Publisher.Publish(AgentsTopic, relay.Message{Type: relay.Text, Data: b})
}

// RunStarted records that an agent started a run, and reports whether it
// did (the run was DISPATCHED): the link then counts the job as running on
// that channel.
func (m *Manager) RunStarted(agentID string, msg jobproto.Started) bool {
	unlock := m.lockJob(msg.Job)
	defer unlock()
	ctx, cancel := bgCtx()
	defer cancel()
	r, err := m.st.Run(ctx, msg.Job, agentID)
	if err != nil || r.State != store.RunDispatched {
		return false
	}
	m.stopTimer("lost:" + msg.Job + "/" + agentID)
	r.State, r.StartedAt = store.RunRunning, msg.StartedAt
	if r.StartedAt.IsZero() {
		r.StartedAt = m.cfg.Now()
	}
	if err := m.st.PutRun(ctx, r); err != nil {
		m.log.Error("jobs: record run start", "job", msg.Job, "agent", agentID, "err", err)
		return true // the agent runs it: its log lines and result count
	}
	m.runsChanged(msg.Job)
	return true
}

var outcomeState = map[jobproto.Outcome]store.RunState{
	jobproto.OutcomeSucceeded: store.RunSucceeded,
	jobproto.OutcomeFailed:    store.RunFailed,
	jobproto.OutcomeAborted:   store.RunAborted,
	jobproto.OutcomeTimedOut:  store.RunTimedOut,
	jobproto.OutcomeRejected:  store.RunRejected,
}

// TakeResult stores a run's result and returns the ack to send. Files
// must have been uploaded: each is checked against its size and checksum.
func (m *Manager) TakeResult(agentID string, res jobproto.Result) jobproto.Ack {
	ack := jobproto.Ack{Type: jobproto.TypeAck, Job: res.Job}
	state, ok := outcomeState[res.Outcome]
	if !ok {
		ack.Error = "unknown outcome " + Truncate(string(res.Outcome), 32)
		return ack
	}
	if res.Interrupted { // the agent died mid-run: lost, with what it had kept
		state = store.RunLost
	}
	// The run's log is stored before the run is final (another run's
	// result may end the job at once), outside the job's lock.
	logCtx, logCancel := bgCtx()
	m.keepRunLog(logCtx, res.Job, agentID)
	logCancel()
	unlock := m.lockJob(res.Job)
	ctx, cancel := bgCtx()
	defer cancel()
	r, err := m.st.Run(ctx, res.Job, agentID)
	if errors.Is(err, store.ErrNotFound) {
		unlock()
		return ack // no such run (the job was deleted): forget it
	}
	if err != nil {
		unlock()
		ack.Error = "the hub's database is unavailable; send it again later"
		return ack
	}
	if r.State.Final() && r.State != store.RunLost {
		unlock()
		return ack // a repeat
	}
	if j, err := m.st.Job(ctx, res.Job); err == nil && j.Phase == store.PhaseArchived {
		// Too late: the job's results were destroyed. Forget this one too.
		if err := m.blobs.Delete(ctx, RunPrefix(res.Job, agentID)); err != nil {
			m.log.Error("jobs: remove files of an archived job", "job", res.Job, "agent", agentID, "err", err)
		}
		unlock()
		return ack
	}
	files, ferr := m.checkFiles(ctx, res.Job, agentID, res.Files)
	if ferr != nil {
		unlock()
		ack.Error = ferr.Error()
		return ack
	}
	r.State, r.ExitCode, r.Error = state, res.ExitCode, cleanText(Truncate(res.Error, 4096))
	r.StartedAt, r.EndedAt = res.StartedAt, res.EndedAt
	if r.EndedAt.IsZero() {
		r.EndedAt = m.cfg.Now()
	}
	r.Stdout, r.Stderr = cleanText(tail(res.Stdout, jobproto.MaxTailBytes)), cleanText(tail(res.Stderr, jobproto.MaxTailBytes))
	r.Metrics = nil
	if len(res.Metrics) > 0 && len(res.Metrics) <= jobproto.MaxMetricsBytes && isJSONObject(res.Metrics) {
		r.Metrics = res.Metrics
	} else if len(res.Metrics) > 0 {
		r.Error = strings.TrimSpace(r.Error + "; metrics refused: not a JSON object within the size limit")
	}
	r.Files = files
	err = m.st.PutRun(ctx, r)
	unlock()
	if err != nil {
		ack.Error = "the hub's database is unavailable; send it again later"
		return ack
	}
	m.stopTimer("lost:" + res.Job + "/" + agentID)
	m.runsChanged(res.Job)
	m.finishIfDone(res.Job)
	m.pumpLater(agentID) // the run's slot is free
	return ack
}

func isJSONObject(b []byte) bool {
	var v map[string]json.RawMessage
	return json.Unmarshal(b, &v) == nil && v != nil
}

// Truncate returns the first n bytes of s at most, never a partial
// character: for quoting what a client or agent sent in a message.
func Truncate(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "")
	}
	return s
}

// tail returns the last n bytes of s at most, never a partial character.
func tail(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[len(s)-n:], "")
	}
	return s
}

// cleanText makes text from an agent storable: valid UTF-8 without NUL
// bytes (PostgreSQL text refuses both).
func cleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// checkFiles checks the uploaded files a result lists.
func (m *Manager) checkFiles(ctx context.Context, job, agent string, files []jobproto.File) ([]store.ResultFile, error) {
	if len(files) > jobproto.MaxFiles {
		return nil, fmt.Errorf("%d files, at most %d", len(files), jobproto.MaxFiles)
	}
	out := make([]store.ResultFile, 0, len(files))
	seen := map[string]bool{}
	for _, f := range files {
		if !jobproto.ValidFileName(f.Name) || seen[f.Name] {
			return nil, fmt.Errorf("file name %q invalid or repeated", Truncate(f.Name, 64))
		}
		seen[f.Name] = true
		key := FileKey(job, agent, f.Name)
		sum, size, err := m.fileSHA256(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("file %s was not uploaded; upload it and send the result again", f.Name)
		}
		if size != f.Size || !strings.EqualFold(sum, f.SHA256) {
			return nil, fmt.Errorf("file %s: uploaded size or checksum differs; upload it again", f.Name)
		}
		out = append(out, store.ResultFile{Name: f.Name, Size: size, SHA256: sum, Path: key})
	}
	return out, nil
}

// fileSHA256 hashes a stored file.
func (m *Manager) fileSHA256(ctx context.Context, key string) (string, int64, error) {
	f, _, err := m.blobs.Open(ctx, key)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// validAgentID reports whether id can name an agent: one topic segment.
func validAgentID(id string) bool {
	return !strings.Contains(id, "/") && topic.Valid(id) == nil
}
