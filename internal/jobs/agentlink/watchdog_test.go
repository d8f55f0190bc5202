package agentlink

// The channel's watchdog (token expiry, pings) is tested in testing/synctest
// bubbles, over net.Pipe rather than TCP (a bubble's time only moves while
// every goroutine in it is blocked, and blocking on a loopback socket does
// not count), so each test checks the moment something happens.

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/relay"
)

// watchedConn is a lineConn whose agent answers pings or, with silent,
// never does (each ping fails at its deadline); it records when it was
// pinged and aborted.
type watchedConn struct {
	*lineConn
	silent bool

	mu      sync.Mutex
	pings   []time.Time // guarded by mu
	aborted time.Time   // guarded by mu; zero until Abort
}

func (w *watchedConn) Ping(deadline time.Time) error {
	w.mu.Lock()
	w.pings = append(w.pings, time.Now())
	w.mu.Unlock()
	if !w.silent {
		return nil
	}
	time.Sleep(time.Until(deadline))
	return errors.New("watchedconn: no pong")
}

func (w *watchedConn) Abort() {
	w.mu.Lock()
	if w.aborted.IsZero() {
		w.aborted = time.Now()
	}
	w.mu.Unlock()
	w.lineConn.Abort()
}

// Close must reach watchedConn's Abort, not the embedded lineConn's.
func (w *watchedConn) Close(code relay.CloseCode, reason string) error {
	w.lineConn.mu.Lock()
	if w.lineConn.closed == 0 {
		w.lineConn.closed = code
	}
	w.lineConn.mu.Unlock()
	w.Abort()
	return nil
}

func (w *watchedConn) record() (pings []time.Time, aborted time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.pings...), w.aborted
}

// acceptOverPipe admits agent id's channel over net.Pipe with grant g,
// says its hello, and returns once the bubble is idle again: the channel
// registered and its watchdog started, at the bubble's current time. The
// agent's end reads and discards what the hub sends.
func (h *harness) acceptOverPipe(t *testing.T, g jobs.AgentGrant, silent bool) *watchedConn {
	t.Helper()
	hub, ag := net.Pipe()
	t.Cleanup(func() { hub.Close(); ag.Close() })
	conn := &watchedConn{lineConn: newLineConn(hub), silent: silent}
	go h.link.AcceptAgent(conn, g)
	a := newAgentEnd(ag)
	a.send(t, hello(g.ID))
	go io.Copy(io.Discard, ag)
	synctest.Wait()
	agents, err := h.jobs.Agents(t.Context())
	if err != nil || len(agents) != 1 || agents[0].ID != g.ID || !agents[0].Connected {
		t.Fatalf("agents after the hello: %+v, %v", agents, err)
	}
	return conn
}

// TestWatchdogClosesAtTokenExpiry: the channel is closed with 4001 at the
// moment the agent's token expires, not a nanosecond before; an agent that
// answers its pings meanwhile keeps its channel.
func TestWatchdogClosesAtTokenExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 20 * time.Second
		h := newHarness(t, jobs.Config{PingInterval: interval}, LinkConfig{})
		expires := time.Now().Add(time.Hour)
		conn := h.acceptOverPipe(t, jobs.AgentGrant{ID: "a1", TokenExpiry: expires}, false)
		time.Sleep(time.Until(expires) - time.Nanosecond)
		synctest.Wait()
		if code := conn.closeCode(); code != 0 {
			t.Fatalf("closed with %d before the token expired", code)
		}
		if pings, _ := conn.record(); len(pings) != int(time.Hour/interval)-1 {
			t.Errorf("%d pings in the hour before expiry, want %d", len(pings), time.Hour/interval-1)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if code := conn.closeCode(); code != relay.CloseTokenExpired {
			t.Fatalf("at expiry: close code %d, want %d", code, relay.CloseTokenExpired)
		}
	})
}

// TestWatchdogAbortsASilentAgent: an agent that does not answer is
// pinged PingInterval after its hello and aborted PongTimeout later.
func TestWatchdogAbortsASilentAgent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval, pongTimeout = 20 * time.Second, 15 * time.Second
		h := newHarness(t, jobs.Config{PingInterval: interval, PongTimeout: pongTimeout}, LinkConfig{})
		start := time.Now()
		conn := h.acceptOverPipe(t, jobs.AgentGrant{ID: "a1"}, true)
		time.Sleep(interval + pongTimeout + time.Second)
		synctest.Wait()
		pings, aborted := conn.record()
		if len(pings) != 1 || !pings[0].Equal(start.Add(interval)) {
			t.Fatalf("pings at %v, want one at +%v", pings, interval)
		}
		if want := start.Add(interval + pongTimeout); !aborted.Equal(want) {
			t.Fatalf("aborted at +%v, want +%v", aborted.Sub(start), want.Sub(start))
		}
	})
}
