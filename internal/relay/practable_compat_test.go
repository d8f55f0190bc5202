package relay

// Part of the practable compatibility suite (see also
// cmd/switchboard/practable_compat_test.go): the coalescing contract that
// practable's hosts rely on.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// practableHost is a Conn that behaves as practable's `relay host` does
// with the messages it receives: internal/hub's Run offers each one to the
// writer without waiting (`select { case client.Send <- m: default: }` on
// an unbuffered channel), so a message that arrives while the writer is
// still writing the previous one to the experiment is lost. Here the writer
// is busy until the test calls finish; a message written to the Conn
// meanwhile is dropped.
//
// Its first WriteMessages delivers, then does not return until release is
// closed: the relay's writer is busy (a write on a loaded socket) while
// the next messages queue behind it.
type practableHost struct {
	*memConn
	release chan struct{}
	first   sync.Once

	mu         sync.Mutex
	busy       bool     // the writer is writing to the experiment
	experiment []string // what reached the experiment, in order
	dropped    int
}

func newPractableHost() *practableHost {
	return &practableHost{memConn: newMemConn(), release: make(chan struct{})}
}

func (h *practableHost) WriteMessages(msgs []Message, deadline time.Time) error {
	for _, m := range msgs {
		h.mu.Lock()
		if h.busy {
			h.dropped++
		} else {
			h.busy = true
			h.experiment = append(h.experiment, string(m.Data))
		}
		h.mu.Unlock()
	}
	wasFirst := false
	h.first.Do(func() { wasFirst = true })
	if wasFirst {
		select {
		case <-h.release:
		case <-h.closed:
		}
	}
	return nil
}

// finish ends the writer's write to the experiment: it takes the next
// message again.
func (h *practableHost) finish() {
	h.mu.Lock()
	h.busy = false
	h.mu.Unlock()
}

// commands returns the commands that reached the experiment.
func (h *practableHost) commands() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.experiment {
		out = append(out, strings.Split(strings.TrimSuffix(m, "\n"), "\n")...)
	}
	return out
}

// TestPractableBusyHostGetsEveryCommandWhenCoalesced pins what practable's
// relay does for its hosts (crossbar's writePump writes what is queued
// behind the message being written in the same websocket message) and why
// labs depend on it: ten commands sent back to back while the host's
// connection is busy reach a host that drops a message arriving while its
// writer is busy — all ten, in order — when the reader coalesces; without
// coalescing the same host loses nine of them.
func TestPractableBusyHostGetsEveryCommandWhenCoalesced(t *testing.T) {
	for _, coalesce := range []bool{true, false} {
		t.Run(fmt.Sprintf("coalesce=%v", coalesce), func(t *testing.T) {
			h := newHarness(t, Config{PingInterval: -1})
			user := h.connect(Info{Topic: "expt00/control", CanWrite: true})
			host := newPractableHost()
			before := h.srv.Stats().Accepted
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				h.srv.Accept(context.Background(), host, Info{Topic: "expt00/control", CanRead: true, Coalesce: coalesce})
			}()
			wait.For(t, "host registered", func() bool { return h.srv.Stats().Accepted > before })

			// An earlier command reaches the experiment; the relay's write
			// of it has not returned yet when the user sends ten more.
			user.send(t, Text, "start\n")
			wait.For(t, "the earlier command at the experiment", func() bool { return len(host.commands()) == 1 })
			var want []string
			for i := range 10 {
				cmd := fmt.Sprintf("set %d", i)
				want = append(want, cmd)
				user.send(t, Text, cmd+"\n")
			}
			wait.For(t, "ten commands queued for the host", func() bool {
				c := connOfConn(h, host)
				c.mu.Lock()
				defer c.mu.Unlock()
				return len(c.q)-c.qHead == 10
			})
			host.finish() // the experiment has taken the earlier command
			close(host.release)
			wait.For(t, "every message written", func() bool {
				return connOfConn(h, host).msgsOut.Load() == 11
			})

			got := host.commands()[1:]
			host.mu.Lock()
			dropped := host.dropped
			host.mu.Unlock()
			if coalesce {
				if !slices.Equal(got, want) || dropped != 0 {
					t.Fatalf("experiment got %q (%d dropped), want all ten: %q", got, dropped, want)
				}
				return
			}
			if len(got) != 1 || dropped != 9 {
				t.Fatalf("without coalescing the experiment got %q and the host dropped %d; want 1 and 9 (the host's bug)", got, dropped)
			}
		})
	}
}
