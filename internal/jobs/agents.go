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
	"strings"
	"sync"
	"time"

	"switchboard/internal/jobproto"
	"switchboard/internal/relay"
	"switchboard/internal/store"
	"switchboard/internal/topic"
	"switchboard/pkg/wire"
)

// helloTimeout bounds the wait for an agent's hello.
const helloTimeout = 10 * time.Second

// agentSession is one connected agent's control channel.
type agentSession struct {
	m        *Manager
	conn     relay.Conn
	id       string
	labels   []string
	actions  []jobproto.Action
	grant    AgentGrant
	since    time.Time
	writeMu  sync.Mutex // serialises writes
	mu       sync.Mutex
	running  map[string]bool // jobs this agent reports running
	sent     map[string]bool // jobs whose run was sent on this connection
	closed   bool
	closeErr chan struct{}
}

// action returns the agent's declaration of name, or nil.
func (s *agentSession) action(name string) *jobproto.Action {
	for i := range s.actions {
		if s.actions[i].Name == name {
			return &s.actions[i]
		}
	}
	return nil
}

func (s *agentSession) isRunning(job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[job]
}

// markSent records that job's run was sent on this connection and reports
// whether it was the first time.
func (s *agentSession) markSent(job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sent[job] {
		return false
	}
	if s.sent == nil {
		s.sent = map[string]bool{}
	}
	s.sent[job] = true
	return true
}

func (s *agentSession) wasSent(job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent[job]
}

func (s *agentSession) setRunning(job string, on bool) {
	s.mu.Lock()
	if on {
		s.running[job] = true
	} else {
		delete(s.running, job)
	}
	s.mu.Unlock()
}

func (s *agentSession) runningJobs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.running))
	for j := range s.running {
		out = append(out, j)
	}
	slices.Sort(out)
	return out
}

// send writes one message; false if the channel is broken (it is then
// closed).
func (s *agentSession) send(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	s.writeMu.Lock()
	err = s.conn.WriteMessages([]relay.Message{{Type: relay.Text, Data: b}}, time.Now().Add(s.m.cfg.WriteTimeout))
	s.writeMu.Unlock()
	if err != nil {
		s.m.log.Debug("jobs: write to agent failed", "agent", s.id, "err", err)
		s.conn.Abort()
		return false
	}
	return true
}

func (s *agentSession) close(code relay.CloseCode, reason string) {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return
	}
	go func() {
		s.writeMu.Lock()
		s.conn.Close(code, reason)
		s.writeMu.Unlock()
	}()
}

// CloseWhere closes the control channels whose token matches (a
// revocation) with code and reason, and reports how many. It covers every
// admitted channel, including those still waiting for their hello.
func (m *Manager) CloseWhere(match func(*relay.Info) bool, code relay.CloseCode, reason string) int {
	var hit []*agentSession
	m.mu.Lock()
	for s := range m.links {
		g := &s.grant
		if match(&relay.Info{Topic: g.ID, Prefix: wire.PrefixAgent, BookingID: g.BookingID, Subject: g.Subject, TokenID: g.TokenID}) {
			hit = append(hit, s)
		}
	}
	m.mu.Unlock()
	for _, s := range hit {
		s.close(code, reason)
	}
	return len(hit)
}

// deniedLocked reports whether g's token is revoked. m.mu is held, so that
// admission and CloseWhere are ordered (see Config.Denier).
func (m *Manager) deniedLocked(g *AgentGrant) bool {
	if m.cfg.Denier == nil {
		return false
	}
	_, denied := m.cfg.Denier.Denied(g.BookingID, g.Subject, g.TokenID)
	return denied
}

func (s *agentSession) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// protocolError is an agent that broke the control protocol.
type protocolError struct {
	code   relay.CloseCode
	reason string
}

func (e *protocolError) Error() string { return e.reason }

// AcceptAgent serves an agent's control channel until it ends; it owns conn
// and closes it (internal/jobs/agentlink calls it).
func (m *Manager) AcceptAgent(conn relay.Conn, g AgentGrant) {
	s := &agentSession{m: m, conn: conn, id: g.ID, grant: g, since: m.cfg.Now(), running: map[string]bool{}}
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		conn.Close(relay.CloseGoingAway, "server shutting down")
		return
	}
	if m.deniedLocked(&g) {
		m.mu.Unlock()
		conn.Close(relay.CloseDenied, "denied")
		return
	}
	m.links[s] = true
	m.bg.Add(1)
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.links, s)
		m.mu.Unlock()
		m.bg.Done()
	}()
	err := m.serveAgent(s)
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		m.log.Warn("jobs: agent refused", "agent", g.ID, "reason", pe.reason)
		s.writeMu.Lock()
		conn.Close(pe.code, pe.reason)
		s.writeMu.Unlock()
	default:
		conn.Abort()
	}
}

func (m *Manager) serveAgent(s *agentSession) error {
	// Reading happens on this goroutine; a watchdog closes the channel at
	// the token's expiry and when pings go unanswered.
	stop := make(chan struct{})
	defer close(stop)
	hello, err := m.readHello(s)
	if err != nil {
		return err
	}
	s.labels, s.actions = hello.Labels, hello.Actions
	if err := m.register(s, hello); err != nil {
		return err
	}
	defer m.unregister(s)
	go m.watchdog(s, stop)
	for {
		typ, data, err := s.conn.ReadMessage()
		if err != nil {
			return err
		}
		if typ != relay.Text {
			return &protocolError{relay.ClosePolicy, "control messages are JSON text"}
		}
		if err := m.handleAgentMessage(s, data); err != nil {
			return err
		}
	}
}

// watchdog closes the channel at token expiry and pings the agent.
func (m *Manager) watchdog(s *agentSession, stop <-chan struct{}) {
	var expiry <-chan time.Time
	if !s.grant.TokenExpiry.IsZero() {
		t := time.NewTimer(max(s.grant.TokenExpiry.Sub(m.cfg.Now()), 0))
		defer t.Stop()
		expiry = t.C
	}
	tick := time.NewTicker(m.cfg.PingInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-expiry:
			s.close(relay.CloseTokenExpired, "token expired")
			return
		case <-tick.C:
			if err := s.conn.Ping(time.Now().Add(m.cfg.PongTimeout)); err != nil {
				m.log.Info("jobs: agent stopped answering pings", "agent", s.id)
				s.conn.Abort()
				return
			}
		}
	}
}

// readHello reads and checks the agent's first message.
func (m *Manager) readHello(s *agentSession) (*jobproto.Hello, error) {
	type result struct {
		h   *jobproto.Hello
		err error
	}
	got := make(chan result, 1)
	go func() {
		typ, data, err := s.conn.ReadMessage()
		if err != nil {
			got <- result{err: err}
			return
		}
		var h jobproto.Hello
		if typ != relay.Text || json.Unmarshal(data, &h) != nil || h.Type != jobproto.TypeHello {
			got <- result{err: &protocolError{relay.ClosePolicy, "the first message must be a hello"}}
			return
		}
		got <- result{h: &h}
	}()
	t := time.NewTimer(helloTimeout)
	defer t.Stop()
	select {
	case r := <-got:
		if r.err != nil {
			return nil, r.err
		}
		return r.h, checkHello(r.h, s.grant)
	case <-t.C:
		s.conn.Abort()
		<-got
		return nil, errors.New("no hello in time")
	}
}

// checkHello validates a hello against the agent's token.
func checkHello(h *jobproto.Hello, g AgentGrant) error {
	fail := func(format string, args ...any) error {
		return &protocolError{relay.ClosePolicy, fmt.Sprintf(format, args...)}
	}
	if h.Agent != g.ID {
		return fail("hello names agent %q; the token is for %q", Truncate(h.Agent, 64), g.ID)
	}
	if len(h.Labels) > jobproto.MaxLabels || len(h.Actions) > jobproto.MaxActions {
		return fail("too many labels or actions (at most %d and %d)", jobproto.MaxLabels, jobproto.MaxActions)
	}
	for _, l := range h.Labels {
		if !jobproto.ValidLabel(l) {
			return fail("label %q: want key=value", Truncate(l, 64))
		}
		if !labelAllowed(l, g.Labels) {
			return &protocolError{relay.ClosePolicy, "label_forbidden: the token does not allow label " + Truncate(l, 64)}
		}
	}
	seen := map[string]bool{}
	for i := range h.Actions {
		if err := h.Actions[i].Validate(); err != nil {
			return fail("%v", err)
		}
		if seen[h.Actions[i].Name] {
			return fail("action %s declared twice", h.Actions[i].Name)
		}
		seen[h.Actions[i].Name] = true
	}
	if len(h.Running) > 10000 {
		return fail("too many running jobs listed")
	}
	return nil
}

// labelAllowed reports whether the token's labels allow l: the same
// "key=value", or "key=*".
func labelAllowed(l string, allowed []string) bool {
	key, _, _ := strings.Cut(l, "=")
	for _, a := range allowed {
		if a == l || a == key+"=*" {
			return true
		}
	}
	return false
}

// Truncate returns the first n bytes of s at most, never a partial
// character: for quoting what a client or agent sent in a message.
func Truncate(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "")
	}
	return s
}

// register makes s the agent's session, superseding an older one, records
// it and re-sends what the agent should have.
func (m *Manager) register(s *agentSession, h *jobproto.Hello) error {
	ctx, cancel := bgCtx()
	defer cancel()
	// Only the agent's own unfinished runs count as running: a job it
	// has no run in must not accept its log lines.
	var running []string
	for _, j := range h.Running {
		if r, err := m.st.Run(ctx, j, s.id); err == nil && !r.State.Final() {
			running = append(running, j)
		}
	}
	s.mu.Lock()
	for _, j := range running {
		s.running[j] = true
	}
	s.mu.Unlock()
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return &protocolError{relay.CloseGoingAway, "server shutting down"}
	}
	// A revocation since admission closed (or is closing) s; one recorded
	// just now is seen here, under the lock its CloseWhere takes.
	if s.isClosed() || m.deniedLocked(&s.grant) {
		m.mu.Unlock()
		return &protocolError{relay.CloseDenied, "denied"}
	}
	old := m.agents[s.id]
	m.agents[s.id] = s
	m.mu.Unlock()
	if old != nil {
		old.close(relay.CloseSuperseded, "superseded by a newer connection of this agent")
	}
	for _, j := range running {
		m.stopTimer("lost:" + j + "/" + s.id)
	}
	acts, _ := json.Marshal(s.actions)
	a := store.Agent{ID: s.id, Labels: s.labels, Actions: acts, Version: cleanText(Truncate(h.Version, 64)), Node: m.cfg.NodeID,
		Connected: true, LastSeen: s.since, FirstSeen: s.since, RemoteAddr: s.grant.RemoteAddr}
	if err := m.st.PutAgent(ctx, a); err != nil {
		m.log.Error("jobs: record agent", "agent", s.id, "err", err)
	}
	s.send(jobproto.Welcome{Type: jobproto.TypeWelcome, Node: m.cfg.NodeID, MaxFileBytes: m.cfg.MaxFileBytes, MaxRunBytes: m.cfg.MaxRunBytes})
	m.publishAgentEvent("connected", a, s.runningJobs())
	m.log.Info("jobs: agent connected", "agent", s.id, "labels", s.labels, "actions", len(s.actions))
	// Runs dispatched while the agent was away, or whose run message a
	// crash swallowed, are sent again; the agent ignores a run it already
	// has and answers one it finished with its stored result.
	m.goBackground(func() { m.resend(s) })
	return nil
}

// resend sends the agent its dispatched runs again.
func (m *Manager) resend(s *agentSession) {
	ctx, cancel := bgCtx()
	defer cancel()
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		return
	}
	for _, j := range active {
		if j.Phase != store.PhaseExecuting || !slices.Contains(j.Agents, s.id) {
			continue
		}
		// Under the job's lock, so that a dispatch on this session and
		// this re-send do not both send the run.
		unlock := m.lockJob(j.ID)
		runs, err := m.st.Runs(ctx, j.ID)
		if err != nil {
			unlock()
			return
		}
		for _, r := range runs {
			if r.AgentID == s.id && r.State == store.RunDispatched && !s.isRunning(j.ID) && !s.wasSent(j.ID) {
				msg := jobproto.Run{Type: jobproto.TypeRun, Job: j.ID, Action: j.Action, Params: j.Params}
				if j.ExecDuration > 0 {
					msg.Timeout = jobproto.Duration(max(time.Until(j.StartedAt.Add(j.ExecDuration)), time.Second))
				}
				if s.markSent(j.ID) && s.send(msg) {
					m.armLost(j.ID, s.id) // a fresh grace period to start it
				}
			}
			// A run the agent started but no longer lists as running
			// (it restarted, and superseded its old connection before the
			// hub saw that one die): it has the grace period to report it.
			if r.AgentID == s.id && r.State == store.RunRunning && !s.isRunning(j.ID) {
				m.armLostIfUnarmed(j.ID, s.id)
			}
		}
		unlock()
	}
}

// unregister forgets s (unless superseded) and starts the lost grace
// period of its unfinished runs.
func (m *Manager) unregister(s *agentSession) {
	m.mu.Lock()
	current := m.agents[s.id] == s
	if current {
		delete(m.agents, s.id)
	}
	stopped := m.stopped
	m.mu.Unlock()
	if !current {
		return
	}
	now := m.cfg.Now()
	acts, _ := json.Marshal(s.actions)
	a := store.Agent{ID: s.id, Labels: s.labels, Actions: acts, Node: m.cfg.NodeID, Connected: false,
		LastSeen: now, FirstSeen: s.since, RemoteAddr: s.grant.RemoteAddr}
	ctx, cancel := bgCtx()
	defer cancel()
	if err := m.st.PutAgent(ctx, a); err != nil {
		m.log.Error("jobs: record agent", "agent", s.id, "err", err)
	}
	m.publishAgentEvent("disconnected", a, nil)
	m.log.Info("jobs: agent disconnected", "agent", s.id)
	if stopped {
		return // the next start re-arms the runs
	}
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		return
	}
	for _, j := range active {
		if j.Phase == store.PhaseExecuting && slices.Contains(j.Agents, s.id) {
			runs, err := m.st.Runs(ctx, j.ID)
			if err != nil {
				continue
			}
			for _, r := range runs {
				if r.AgentID == s.id && !r.State.Final() {
					m.armLost(j.ID, s.id)
				}
			}
		}
	}
}

// agentEvent is published on the agents topic.
type agentEvent struct {
	Event string    `json:"event"` // connected, disconnected
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

// handleAgentMessage handles one message after hello.
func (m *Manager) handleAgentMessage(s *agentSession, data []byte) error {
	var env jobproto.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return &protocolError{relay.ClosePolicy, "a control message is not a JSON object"}
	}
	switch env.Type {
	case jobproto.TypeStarted:
		var msg jobproto.Started
		if err := json.Unmarshal(data, &msg); err != nil {
			return &protocolError{relay.ClosePolicy, "malformed started message"}
		}
		m.runStarted(s, msg)
	case jobproto.TypeLog:
		var msg jobproto.Log
		if err := json.Unmarshal(data, &msg); err != nil || len(msg.Lines) > jobproto.MaxLogLines {
			return &protocolError{relay.ClosePolicy, "malformed log message"}
		}
		if s.isRunning(msg.Job) && (msg.Stream == jobproto.StreamStdout || msg.Stream == jobproto.StreamStderr) {
			m.publishLog(msg.Job, s.id, msg.Stream, msg.Lines)
		}
	case jobproto.TypeResult:
		var msg jobproto.Result
		if err := json.Unmarshal(data, &msg); err != nil {
			return &protocolError{relay.ClosePolicy, "malformed result message"}
		}
		ack := m.takeResult(s, msg)
		s.send(ack)
	}
	return nil
}

// runStarted records that an agent started a run.
func (m *Manager) runStarted(s *agentSession, msg jobproto.Started) {
	unlock := m.lockJob(msg.Job)
	defer unlock()
	ctx, cancel := bgCtx()
	defer cancel()
	r, err := m.st.Run(ctx, msg.Job, s.id)
	if err != nil || r.State != store.RunDispatched {
		return
	}
	s.setRunning(msg.Job, true)
	m.stopTimer("lost:" + msg.Job + "/" + s.id)
	r.State, r.StartedAt = store.RunRunning, msg.StartedAt
	if r.StartedAt.IsZero() {
		r.StartedAt = m.cfg.Now()
	}
	if err := m.st.PutRun(ctx, r); err != nil {
		m.log.Error("jobs: record run start", "job", msg.Job, "agent", s.id, "err", err)
		return
	}
	m.runsChanged(msg.Job)
}

var outcomeState = map[jobproto.Outcome]store.RunState{
	jobproto.OutcomeSucceeded: store.RunSucceeded,
	jobproto.OutcomeFailed:    store.RunFailed,
	jobproto.OutcomeAborted:   store.RunAborted,
	jobproto.OutcomeTimedOut:  store.RunTimedOut,
	jobproto.OutcomeRejected:  store.RunRejected,
}

// takeResult stores a run's result and returns the ack to send. Files
// must have been uploaded: each is checked against its size and checksum.
func (m *Manager) takeResult(s *agentSession, res jobproto.Result) jobproto.Ack {
	ack := jobproto.Ack{Type: jobproto.TypeAck, Job: res.Job}
	s.setRunning(res.Job, false)
	state, ok := outcomeState[res.Outcome]
	if !ok {
		ack.Error = "unknown outcome " + Truncate(string(res.Outcome), 32)
		return ack
	}
	unlock := m.lockJob(res.Job)
	ctx, cancel := bgCtx()
	defer cancel()
	r, err := m.st.Run(ctx, res.Job, s.id)
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
		if err := m.blobs.Delete(ctx, RunPrefix(res.Job, s.id)); err != nil {
			m.log.Error("jobs: remove files of an archived job", "job", res.Job, "agent", s.id, "err", err)
		}
		unlock()
		return ack
	}
	files, ferr := m.checkFiles(ctx, res.Job, s.id, res.Files)
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
	m.stopTimer("lost:" + res.Job + "/" + s.id)
	m.runsChanged(res.Job)
	m.finishIfDone(res.Job)
	return ack
}

func isJSONObject(b []byte) bool {
	var v map[string]json.RawMessage
	return json.Unmarshal(b, &v) == nil && v != nil
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
