package agentlink

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/relay"
)

// ErrSendQueueFull is the failure of a send to an agent whose queue has no
// room: its channel is closed with wire.CloseSlowConsumer instead of
// holding up the sender.
var ErrSendQueueFull = errors.New("agentlink: the agent's send queue is full")

// errChannelClosed is a send to a channel that is closing.
var errChannelClosed = errors.New("agentlink: the agent's channel is closing")

// closeRequest is how the writer ends the channel.
type closeRequest struct {
	code   relay.CloseCode
	reason string
}

// session is one agent's control channel.
//
// Ownership: conn is read by serve's goroutine only and written (messages,
// the close frame) by the writer goroutine only; the watchdog pings it and
// anyone may Abort it. grant and since are set at admission and agent at
// the hello, before the session is registered, and never change after.
type session struct {
	link  *Link
	conn  relay.Conn
	grant jobs.AgentGrant
	since time.Time
	agent jobs.Agent // what the hello declared

	// wake has room for one signal: the writer has something to do (a
	// queued message or a close). A signal sent while one is pending is
	// not needed: the writer takes everything queued each time.
	wake chan struct{}
	// writerDone is closed when the writer has returned (after closing or
	// aborting conn).
	writerDone chan struct{}

	mu      sync.Mutex
	queue   []relay.Message // to write, in order; guarded by mu
	spare   []relay.Message // the writer's last batch, reused; guarded by mu
	queued  int             // bytes in queue; guarded by mu
	closing *closeRequest   // set once: the writer's last act; guarded by mu
	running map[string]bool // jobs this channel reports running; guarded by mu
	sent    map[string]bool // jobs whose run was queued on this channel; guarded by mu
}

func newSession(l *Link, conn relay.Conn, g jobs.AgentGrant) *session {
	return &session{link: l, conn: conn, grant: g, since: l.now(), wake: make(chan struct{}, 1),
		writerDone: make(chan struct{}), running: map[string]bool{}, sent: map[string]bool{}}
}

// send queues v, JSON-encoded, for the writer and returns at once. A full
// queue (more than Link's SendQueueBytes with v; one message always fits
// an empty queue) closes the channel with CloseSlowConsumer and returns
// ErrSendQueueFull.
func (s *session) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closing != nil {
		s.mu.Unlock()
		return errChannelClosed
	}
	if s.queued > 0 && s.queued+len(b) > s.link.queueBytes {
		s.closeLocked(relay.CloseSlowConsumer, "the hub's send queue to this agent is full: it reads too slowly")
		queued := s.queued
		s.mu.Unlock()
		s.signal()
		s.link.overflows.Add(1)
		s.link.log.Warn("agentlink: send queue full; closing the agent's channel", "agent", s.grant.ID, "queued_bytes", queued)
		return ErrSendQueueFull
	}
	s.queue = append(s.queue, relay.Message{Type: relay.Text, Data: b})
	s.queued += len(b)
	s.mu.Unlock()
	s.signal()
	return nil
}

func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close asks the writer to close the channel with code and reason once
// the write in progress, if any, is done; what is still queued is
// dropped (a new channel of the agent is sent its runs again). The first
// close wins. It does not wait.
func (s *session) close(code relay.CloseCode, reason string) {
	s.mu.Lock()
	s.closeLocked(code, reason)
	s.mu.Unlock()
	s.signal()
}

func (s *session) closeLocked(code relay.CloseCode, reason string) {
	if s.closing != nil {
		return
	}
	s.closing = &closeRequest{code, reason}
	clear(s.queue)
	s.queue, s.queued = s.queue[:0], 0
}

func (s *session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing != nil
}

// writer is the only goroutine that writes messages to conn: it writes
// what is queued, as one batch, each time it is woken, and ends the
// channel at the close request or at the first failed write.
func (s *session) writer() {
	defer close(s.writerDone)
	for range s.wake {
		s.mu.Lock()
		batch, req := s.queue, s.closing
		s.queue, s.spare, s.queued = s.spare[:0], nil, 0
		s.mu.Unlock()
		if len(batch) > 0 {
			err := s.conn.WriteMessages(batch, time.Now().Add(s.link.writeTimeout))
			clear(batch)
			s.mu.Lock()
			s.spare = batch[:0]
			s.mu.Unlock()
			if err != nil {
				s.link.log.Debug("agentlink: write to agent failed", "agent", s.grant.ID, "err", err)
				s.conn.Abort()
				s.mu.Lock()
				s.closeLocked(relay.CloseGoingAway, "write failed")
				s.mu.Unlock()
				return
			}
		}
		if req != nil {
			s.conn.Close(req.code, req.reason)
			return
		}
	}
}

// Per-channel job state, for jobs.Agents.

func (s *session) isRunning(job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[job]
}

func (s *session) setRunning(job string, on bool) {
	s.mu.Lock()
	if on {
		s.running[job] = true
	} else {
		delete(s.running, job)
	}
	s.mu.Unlock()
}

// markSent records that job's run is queued on this channel and reports
// whether it was the first time.
func (s *session) markSent(job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sent[job] {
		return false
	}
	s.sent[job] = true
	return true
}

func (s *session) runningJobs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.running))
}
