package agentlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/relay"
)

// DefaultSendQueueBytes bounds the messages queued for one agent.
const DefaultSendQueueBytes = 1 << 20

// LinkConfig configures a Link. Zero values mean the documented defaults.
// The channel's timings (PingInterval, PongTimeout, WriteTimeout), the node
// id, logger and clock are the Manager's (jobs.Config).
type LinkConfig struct {
	// Denier, if set, is asked whether an agent's token is revoked when
	// its channel is admitted and again at its hello, each time under the
	// lock CloseWhere takes. A revocation that is visible to Denier before
	// CloseWhere runs therefore cannot miss a channel being admitted.
	Denier jobs.Denier
	// SendQueueBytes bounds the bytes queued for one agent (default
	// DefaultSendQueueBytes); a message always fits an empty queue. A send
	// that finds no room closes the channel with CloseSlowConsumer
	// (ErrSendQueueFull).
	SendQueueBytes int
	// Bus, if set, joins the Link to the other nodes' (cluster.go): it
	// announces the agents whose channels it holds and learns theirs, so
	// that Connected and Status cover every node's agents, and it carries
	// runs and aborts for an agent to the node holding its channel. Nil:
	// this node's agents only.
	Bus cluster.Bus
	// BusPrefix is the first token of the Link's subjects (default
	// cluster.DefaultPrefix).
	BusPrefix string
}

// Link holds this node's agent control channels: it serves each channel
// the Endpoint hands it (AcceptAgent), reports what the agents say to the
// Manager, and implements jobs.Agents for the Manager's sends. Create it
// with NewLink, give it to the Manager's Start, and Stop it at shutdown.
type Link struct {
	jobs         *jobs.Manager // set by NewLink, never changed
	denier       jobs.Denier
	queueBytes   int
	writeTimeout time.Duration
	pingInterval time.Duration
	pongTimeout  time.Duration
	log          *slog.Logger
	now          func() time.Time

	overflows atomic.Uint64 // sends refused by a full queue (ErrSendQueueFull)
	bus       *linkBus      // set by NewLink; nil without LinkConfig.Bus

	mu      sync.Mutex
	agents  map[string]*session // registered (after hello), by agent id; guarded by mu
	links   map[*session]bool   // every admitted channel, before its hello too; guarded by mu
	stopped bool                // guarded by mu

	bg sync.WaitGroup // channels being served
}

var (
	_ jobs.Agents = (*Link)(nil)
	_ Acceptor    = (*Link)(nil)
)

// NewLink returns the Link that reports to m.
func NewLink(m *jobs.Manager, cfg LinkConfig) (*Link, error) {
	if m == nil {
		return nil, errors.New("agentlink: a jobs.Manager is required")
	}
	if cfg.SendQueueBytes < 0 {
		return nil, fmt.Errorf("agentlink: SendQueueBytes %d is negative", cfg.SendQueueBytes)
	}
	if cfg.SendQueueBytes == 0 {
		cfg.SendQueueBytes = DefaultSendQueueBytes
	}
	jc := m.Config()
	l := &Link{jobs: m, denier: cfg.Denier, queueBytes: cfg.SendQueueBytes,
		writeTimeout: jc.WriteTimeout, pingInterval: jc.PingInterval, pongTimeout: jc.PongTimeout,
		log: jc.Logger, now: jc.Now,
		agents: map[string]*session{}, links: map[*session]bool{}}
	if cfg.Bus != nil {
		b, err := joinBus(l, cfg.Bus, cfg.BusPrefix)
		if err != nil {
			return nil, err
		}
		l.bus = b
	}
	return l, nil
}

// SendQueueOverflows returns how many sends found an agent's queue full
// (each closed that agent's channel).
func (l *Link) SendQueueOverflows() uint64 { return l.overflows.Load() }

// AcceptAgent serves an agent's control channel until it ends; it owns
// conn and closes it (Acceptor).
func (l *Link) AcceptAgent(conn relay.Conn, g jobs.AgentGrant) {
	s := newSession(l, conn, g)
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		conn.Close(relay.CloseGoingAway, "server shutting down")
		return
	}
	if l.deniedLocked(&g) {
		l.mu.Unlock()
		conn.Close(relay.CloseDenied, "denied")
		return
	}
	l.links[s] = true
	l.bg.Add(1)
	l.mu.Unlock()
	go s.writer()
	defer func() {
		l.mu.Lock()
		delete(l.links, s)
		l.mu.Unlock()
		l.bg.Done()
	}()
	err := l.serve(s)
	var pe *protocolError
	if errors.As(err, &pe) {
		l.log.Warn("agentlink: agent refused", "agent", g.ID, "reason", pe.reason)
		s.close(pe.code, pe.reason)
	} else {
		conn.Abort()
		s.close(relay.CloseGoingAway, "channel ended")
	}
	<-s.writerDone
}

// serve reads the channel: the hello, then the agent's messages, in order,
// until the channel ends.
func (l *Link) serve(s *session) error {
	hello, err := l.readHello(s)
	if err != nil {
		return err
	}
	s.agent = jobs.Agent{ID: s.grant.ID, Labels: hello.Labels, Actions: hello.Actions, Version: hello.Version,
		RemoteAddr: s.grant.RemoteAddr, Since: s.since}
	if err := l.register(s, hello); err != nil {
		return err
	}
	defer l.unregister(s)
	// A watchdog closes the channel at the token's expiry and when pings
	// go unanswered.
	stop := make(chan struct{})
	defer close(stop)
	go l.watchdog(s, stop)
	for {
		typ, data, err := s.conn.ReadMessage()
		if err != nil {
			return err
		}
		if typ == relay.Binary {
			err = l.handleLogChunk(s, data)
		} else {
			err = l.handle(s, data)
		}
		if err != nil {
			return err
		}
	}
}

// register makes s the agent's channel, superseding an older one, records
// it, welcomes the agent and has its runs sent again.
func (l *Link) register(s *session, h *jobproto.Hello) error {
	// Only the agent's own unfinished runs count as running.
	for _, j := range l.jobs.AgentRunning(s.agent.ID, h.Running) {
		s.setRunning(j, true)
	}
	if h.ReportsInterrupted {
		l.jobs.AgentForgotRuns(s.agent.ID, h.Running, h.Results)
	}
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return &protocolError{relay.CloseGoingAway, "server shutting down"}
	}
	// A revocation since admission closed (or is closing) s; one recorded
	// just now is seen here, under the lock its CloseWhere takes.
	if s.isClosing() || l.deniedLocked(&s.grant) {
		l.mu.Unlock()
		return &protocolError{relay.CloseDenied, "denied"}
	}
	old := l.agents[s.agent.ID]
	l.agents[s.agent.ID] = s
	l.mu.Unlock()
	if old != nil {
		old.close(relay.CloseSuperseded, "superseded by a newer connection of this agent")
	}
	// Recorded before the welcome: an agent that has its welcome can be
	// targeted by a new job at once.
	l.jobs.AgentConnected(s.agent, s.runningJobs())
	if l.bus != nil {
		l.bus.announce(s) // before the welcome too: other nodes may target it then
	}
	s.send(l.jobs.Welcome())
	l.jobs.ResendRuns(s.agent.ID)
	return nil
}

// unregister forgets s, unless a newer channel of the agent superseded it.
func (l *Link) unregister(s *session) {
	l.mu.Lock()
	current := l.agents[s.agent.ID] == s
	if current {
		delete(l.agents, s.agent.ID)
	}
	l.mu.Unlock()
	if current {
		l.jobs.AgentDisconnected(s.agent)
		if l.bus != nil {
			l.bus.withdraw(s.agent.ID)
		}
	}
}

// handle handles one message after the hello.
func (l *Link) handle(s *session, data []byte) error {
	msg, err := decodeMessage(data)
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case jobproto.Started:
		if l.jobs.RunStarted(s.agent.ID, m) {
			s.setRunning(m.Job, true)
			l.runningChanged(s)
		}
	case jobproto.Log:
		if s.isRunning(m.Job) && validStream(m.Stream) {
			l.jobs.PublishLog(m.Job, s.agent.ID, m.Stream, jobproto.LinesText(m.Lines))
		}
	case jobproto.Result:
		s.setRunning(m.Job, false)
		s.send(l.jobs.TakeResult(s.agent.ID, m))
		l.runningChanged(s)
	}
	return nil
}

// handleLogChunk handles a binary frame: the only one of the protocol is
// a log chunk (jobproto.ParseLogChunk), whose output goes to the run's log
// whole, without a look at its lines.
func (l *Link) handleLogChunk(s *session, frame []byte) error {
	hdr, text, err := jobproto.ParseLogChunk(frame)
	if err != nil {
		return &protocolError{relay.ClosePolicy, "malformed log chunk (binary frames are log chunks only)"}
	}
	if s.isRunning(hdr.Job) && validStream(hdr.Stream) {
		l.jobs.PublishLog(hdr.Job, s.agent.ID, hdr.Stream, text)
	}
	return nil
}

func validStream(s string) bool { return s == jobproto.StreamStdout || s == jobproto.StreamStderr }

// watchdog closes the channel at token expiry and pings the agent.
func (l *Link) watchdog(s *session, stop <-chan struct{}) {
	var expiry <-chan time.Time
	if !s.grant.TokenExpiry.IsZero() {
		t := time.NewTimer(max(s.grant.TokenExpiry.Sub(l.now()), 0))
		defer t.Stop()
		expiry = t.C
	}
	tick := time.NewTicker(l.pingInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-expiry:
			s.close(relay.CloseTokenExpired, "token expired")
			return
		case <-tick.C:
			if err := s.conn.Ping(time.Now().Add(l.pongTimeout)); err != nil {
				l.log.Info("agentlink: agent stopped answering pings", "agent", s.grant.ID)
				s.conn.Abort()
				return
			}
		}
	}
}

// Stop turns new channels away, closes every channel (1001) and waits for
// them to end, within ctx; then it aborts those left.
func (l *Link) Stop(ctx context.Context) error {
	l.mu.Lock()
	l.stopped = true
	all := make([]*session, 0, len(l.links))
	for s := range l.links {
		all = append(all, s)
	}
	l.mu.Unlock()
	for _, s := range all {
		s.close(relay.CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() { l.bg.Wait(); close(done) }()
	if l.bus != nil {
		defer l.bus.close()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, s := range all {
			s.conn.Abort()
		}
		return fmt.Errorf("agentlink: stop: %w", ctx.Err())
	}
}

// runningChanged tells the other nodes the jobs s now reports running.
func (l *Link) runningChanged(s *session) {
	if l.bus != nil {
		l.bus.announce(s)
	}
}

// CloseWhere closes the control channels whose token's identity m matches
// (a revocation) with code and reason, and reports how many. It covers
// every admitted channel, including those still waiting for their hello.
func (l *Link) CloseWhere(m relay.IdentityMatch, code relay.CloseCode, reason string) int {
	var hit []*session
	l.mu.Lock()
	for s := range l.links {
		g := &s.grant
		if m.Matches(relay.Identity{BookingID: g.BookingID, Subject: g.Subject, TokenID: g.TokenID}) {
			hit = append(hit, s)
		}
	}
	l.mu.Unlock()
	for _, s := range hit {
		s.close(code, reason)
	}
	return len(hit)
}

// deniedLocked reports whether g's token is revoked. l.mu is held, so that
// admission and CloseWhere are ordered (see LinkConfig.Denier).
func (l *Link) deniedLocked(g *jobs.AgentGrant) bool {
	if l.denier == nil {
		return false
	}
	_, denied := l.denier.Denied(g.BookingID, g.Subject, g.TokenID)
	return denied
}

// jobs.Agents, for the Manager: none of these blocks or writes to a
// socket (the Manager calls them under a job's lock).

// Connected implements jobs.Agents: this node's agents, and the other
// nodes' (with a bus) that this node does not hold.
func (l *Link) Connected() []jobs.Agent {
	l.mu.Lock()
	out := make([]jobs.Agent, 0, len(l.agents))
	local := make(map[string]bool, len(l.agents))
	for id, s := range l.agents {
		out = append(out, s.agent)
		local[id] = true
	}
	l.mu.Unlock()
	if l.bus != nil {
		out = append(out, l.bus.remoteAgents(local)...)
	}
	return out
}

// connectedAnywhere reports whether this node or, as far as it knows,
// another holds the agent's channel.
func (l *Link) connectedAnywhere(agentID string) bool {
	if l.session(agentID) != nil {
		return true
	}
	if l.bus != nil {
		_, ok := l.bus.lookup(agentID)
		return ok
	}
	return false
}

// session returns the agent's registered channel, or nil.
func (l *Link) session(agentID string) *session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.agents[agentID]
}

// Status implements jobs.Agents: from the channel, or from what the
// agent's node announced.
func (l *Link) Status(agentID, job string) (connected, running bool) {
	if s := l.session(agentID); s != nil {
		return true, s.isRunning(job)
	}
	if l.bus != nil {
		if a, ok := l.bus.lookup(agentID); ok {
			return true, slices.Contains(a.Running, job)
		}
	}
	return false, false
}

// SendRun implements jobs.Agents: queued on this node's channel of the
// agent, or published to the node holding it.
func (l *Link) SendRun(agentID string, run jobproto.Run) bool {
	if l.session(agentID) == nil && l.bus != nil {
		return l.bus.send(agentID, run)
	}
	return l.sendRunLocal(agentID, run)
}

// SendAbort implements jobs.Agents, as SendRun.
func (l *Link) SendAbort(agentID string, abort jobproto.Abort) bool {
	if l.session(agentID) == nil && l.bus != nil {
		return l.bus.send(agentID, abort)
	}
	return l.sendAbortLocal(agentID, abort)
}

// sendRunLocal queues run on this node's channel of the agent, unless that
// channel was sent the job's run already.
func (l *Link) sendRunLocal(agentID string, run jobproto.Run) bool {
	s := l.session(agentID)
	return s != nil && s.markSent(run.Job) && s.send(run) == nil
}

// sendAbortLocal queues abort on this node's channel of the agent.
func (l *Link) sendAbortLocal(agentID string, abort jobproto.Abort) bool {
	s := l.session(agentID)
	return s != nil && s.send(abort) == nil
}
