package agentlink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// lineConn is a relay.Conn over a real TCP socket, one JSON message a
// line. Like a websocket's, its writes block when the peer stops reading
// and the TCP window is full, until their deadline.
type lineConn struct {
	c      net.Conn
	r      *bufio.Reader
	once   sync.Once
	mu     sync.Mutex
	closed relay.CloseCode // the code of Close, 0 before it
}

func newLineConn(c net.Conn) *lineConn { return &lineConn{c: c, r: bufio.NewReader(c)} }

func (l *lineConn) ReadMessage() (relay.MessageType, []byte, error) {
	b, err := l.r.ReadBytes('\n')
	if err != nil {
		return 0, nil, err
	}
	return relay.Text, b[:len(b)-1], nil
}

func (l *lineConn) WriteMessages(msgs []relay.Message, deadline time.Time) error {
	l.c.SetWriteDeadline(deadline)
	for _, m := range msgs {
		if _, err := l.c.Write(append(append([]byte(nil), m.Data...), '\n')); err != nil {
			return err
		}
	}
	return nil
}

func (l *lineConn) Ping(time.Time) error { return nil }

// Close records code and ends the connection; a close frame would be one
// more write, which the tests here do not need.
func (l *lineConn) Close(code relay.CloseCode, _ string) error {
	l.mu.Lock()
	if l.closed == 0 {
		l.closed = code
	}
	l.mu.Unlock()
	l.Abort()
	return nil
}

func (l *lineConn) closeCode() relay.CloseCode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *lineConn) Abort() { l.once.Do(func() { l.c.Close() }) }

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (hub, agent net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	agent, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if hub, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Close(); hub.Close() })
	return hub, agent
}

// fillWindow writes to hub until a write blocks: the agent side reads
// nothing, so its receive buffer and the hub's send buffer are full, and
// every later write to hub blocks until its deadline.
func fillWindow(t *testing.T, hub, agent net.Conn) {
	t.Helper()
	agent.(*net.TCPConn).SetReadBuffer(4096)
	hub.(*net.TCPConn).SetWriteBuffer(4096)
	chunk := make([]byte, 16<<10)
	for i := 0; ; i++ {
		if i == 10000 {
			t.Fatal("160 MB written and the TCP window is still open")
		}
		hub.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := hub.Write(chunk); errors.Is(err, os.ErrDeadlineExceeded) {
			hub.SetWriteDeadline(time.Time{})
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// agentEnd is the agent's side of a channel.
type agentEnd struct {
	c net.Conn
	r *bufio.Reader
}

func newAgentEnd(c net.Conn) *agentEnd { return &agentEnd{c: c, r: bufio.NewReader(c)} }

func (a *agentEnd) send(t *testing.T, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	a.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.c.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// next reads up to the next message of type typ, within d.
func (a *agentEnd) next(typ string, d time.Duration) error {
	a.c.SetReadDeadline(time.Now().Add(d))
	for {
		b, err := a.r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("waiting %s for a %s message: %w", d, typ, err)
		}
		var env jobproto.Envelope
		if json.Unmarshal(b, &env) == nil && env.Type == typ {
			return nil
		}
	}
}

func hello(id string) jobproto.Hello {
	return jobproto.Hello{Type: jobproto.TypeHello, Agent: id, Actions: []jobproto.Action{{Name: "x", Timeout: jobproto.Duration(time.Minute)}}}
}

// harness is a Manager over SQLite with a Link, as a node wires them.
type harness struct {
	st   store.Store
	jobs *jobs.Manager
	link *Link
}

func newHarness(t *testing.T, jc jobs.Config, lc LinkConfig) *harness {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	jc.Store, jc.ResultsDir = st, filepath.Join(dir, "blobs")
	m, err := jobs.New(jc)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLink(m, lc)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		l.Stop(sctx)
		m.Stop(sctx)
		st.Close()
	})
	return &harness{st: st, jobs: m, link: l}
}

// connect admits an agent's channel over a TCP pair and says its hello;
// stalled fills the channel's TCP window first.
func (h *harness) connect(t *testing.T, id string, stalled bool) (*agentEnd, *lineConn) {
	t.Helper()
	hub, ag := tcpPair(t)
	if stalled {
		fillWindow(t, hub, ag)
	}
	conn := newLineConn(hub)
	go h.link.AcceptAgent(conn, jobs.AgentGrant{ID: id})
	a := newAgentEnd(ag)
	a.send(t, hello(id))
	// Registered, and recorded (a job can target it).
	wait.For(t, "agent "+id+" recorded as connected", func() bool {
		agents, _ := h.jobs.Agents(context.Background())
		for _, a := range agents {
			if a.ID == id && a.Connected {
				return true
			}
		}
		return false
	})
	return a, conn
}

// TestStalledAgentDoesNotDelayTheJob: an agent that stops reading (its TCP
// window full) must not hold up the transitions of a job it shares with a
// healthy agent. Before the send queue, the hub wrote the run and the
// abort to each agent's socket under the job's lock: PHASE=RUN took the
// whole write timeout (10 s), and so did every transition of the job
// queued behind it (the healthy agent's run, its result, the abort).
func TestStalledAgentDoesNotDelayTheJob(t *testing.T) {
	const (
		writeTimeout = 10 * time.Second
		prompt       = 2 * time.Second // well under the write timeout
	)
	h := newHarness(t, jobs.Config{WriteTimeout: writeTimeout, LostGrace: time.Minute}, LinkConfig{})
	ctx := context.Background()
	healthy, _ := h.connect(t, "b-healthy", false)
	if err := healthy.next(jobproto.TypeWelcome, prompt); err != nil {
		t.Fatal(err)
	}
	_, stalledConn := h.connect(t, "a-stalled", true) // sorted first: dispatch reaches it first
	j, err := h.jobs.Create(ctx, jobs.Spec{Owner: "alice", Action: "x", Targets: "a-stalled,b-healthy"})
	if err != nil {
		t.Fatal(err)
	}
	timed := func(what string, f func() error) {
		t.Helper()
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- f() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(prompt):
			t.Fatalf("%s took more than %s (write timeout %s): a write to the stalled agent holds it up", what, prompt, writeTimeout)
		}
		t.Logf("%s: %s", what, time.Since(start))
	}
	timed("PHASE=RUN", func() error {
		j, err := h.jobs.Run(ctx, j.ID)
		if err == nil && j.Phase != store.PhaseExecuting {
			err = fmt.Errorf("phase %s, want EXECUTING", j.Phase)
		}
		return err
	})
	timed("the healthy agent's run to arrive", func() error { return healthy.next(jobproto.TypeRun, writeTimeout+time.Second) })
	healthy.send(t, jobproto.Started{Type: jobproto.TypeStarted, Job: j.ID})
	healthy.send(t, jobproto.Result{Type: jobproto.TypeResult, Job: j.ID, Outcome: jobproto.OutcomeSucceeded})
	timed("the healthy agent's result to be stored", func() error {
		if err := healthy.next(jobproto.TypeAck, writeTimeout+time.Second); err != nil {
			return err
		}
		if r, err := h.jobs.AgentRun(ctx, j.ID, "b-healthy"); err != nil || r.State != store.RunSucceeded {
			return fmt.Errorf("healthy run after its ack: %s %v", r.State, err)
		}
		return nil
	})
	timed("PHASE=ABORT", func() error {
		j, err := h.jobs.Abort(j.ID, "")
		if err == nil && j.Phase != store.PhaseAborted {
			err = fmt.Errorf("phase %s, want ABORTED", j.Phase)
		}
		return err
	})
	// The stalled agent's run and abort wait in its queue; its channel
	// is still open (nothing has failed yet).
	if c, _ := h.link.Status("a-stalled", j.ID); !c || stalledConn.closeCode() != 0 {
		t.Fatalf("stalled agent: connected %v, closed with %d", c, stalledConn.closeCode())
	}
}

// TestSendQueueFullClosesTheChannel: sends to an agent that does not read
// never block; once its queue is full a send fails with ErrSendQueueFull,
// is counted, and the channel is closing (nothing more is queued); it
// ends when the write in progress fails at the write timeout.
func TestSendQueueFullClosesTheChannel(t *testing.T) {
	const queueBytes = 8 << 10
	h := newHarness(t, jobs.Config{WriteTimeout: 300 * time.Millisecond}, LinkConfig{SendQueueBytes: queueBytes})
	h.connect(t, "slow", true)
	abort := jobproto.Abort{Type: jobproto.TypeAbort, Job: "j", Reason: string(make([]byte, 1000))}
	start := time.Now()
	sent := 0
	for h.link.SendAbort("slow", abort) {
		if sent++; sent > queueBytes/1000+1 {
			t.Fatalf("%d aborts of over 1000 bytes queued within %d bytes", sent, queueBytes)
		}
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("sends to a stalled agent took %s", elapsed)
	}
	if sent == 0 {
		t.Fatal("no send was queued")
	}
	if n := h.link.SendQueueOverflows(); n != 1 {
		t.Fatalf("SendQueueOverflows = %d, want 1", n)
	}
	if s := h.link.session("slow"); s != nil {
		if err := s.send(abort); !errors.Is(err, errChannelClosed) {
			t.Fatalf("send after the overflow: %v, want errChannelClosed", err)
		}
	}
	wait.For(t, "the channel to end at the write timeout", func() bool { c, _ := h.link.Status("slow", ""); return !c })
}

// TestSendQueueOverflowCloseCode: an agent whose queue overflows while
// its writer is idle (it reads, but a burst outgrows the queue) gets the
// 4008 close.
func TestSendQueueOverflowCloseCode(t *testing.T) {
	h := newHarness(t, jobs.Config{}, LinkConfig{SendQueueBytes: 1})
	a, conn := h.connect(t, "c1", false)
	if err := a.next(jobproto.TypeWelcome, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s := h.link.session("c1")
	s.mu.Lock() // hold the writer off while two messages are queued
	s.queue = append(s.queue, relay.Message{Type: relay.Text, Data: []byte(`{"type":"abort","job":"a"}`)})
	s.queued += 26
	s.mu.Unlock()
	if err := s.send(jobproto.Abort{Type: jobproto.TypeAbort, Job: "b"}); !errors.Is(err, ErrSendQueueFull) {
		t.Fatalf("send over the limit: %v, want ErrSendQueueFull", err)
	}
	wait.For(t, "the channel to close", func() bool { return conn.closeCode() != 0 })
	if code := conn.closeCode(); code != relay.CloseSlowConsumer {
		t.Fatalf("closed with %d, want %d (%s)", code, relay.CloseSlowConsumer, wire.CloseSlowConsumer)
	}
}

// TestDecodeMessageReadsTheTypeOnce: a message that starts with its type is
// decoded as that type; any other layout is parsed whole; a malformed
// message is a protocol error whatever its type.
func TestDecodeMessageReadsTheTypeOnce(t *testing.T) {
	for _, tc := range []struct {
		data string
		want any
		err  bool
	}{
		{`{"type":"log","job":"j","stream":"stdout","lines":["a"]}`, jobproto.Log{Type: "log", Job: "j", Stream: "stdout", Lines: []string{"a"}}, false},
		{` {"job":"j","type":"log","stream":"stdout","lines":["a"]}`, jobproto.Log{Type: "log", Job: "j", Stream: "stdout", Lines: []string{"a"}}, false},
		{`{"type":"started","job":"j"}`, jobproto.Started{Type: "started", Job: "j"}, false},
		{`{"type":"future","x":1}`, nil, false},
		{`{"type":"future","x":`, nil, true},
		{`{"type":"log","lines":`, nil, true},
		{`{"type":"lo\\u0067","job":"j"}`, nil, false}, // an escaped type: parsed whole, an unknown type
		{`not json`, nil, true},
	} {
		got, err := decodeMessage([]byte(tc.data))
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %#v, %v; want %#v, error %v", tc.data, got, err, tc.want, tc.err)
		}
	}
}
