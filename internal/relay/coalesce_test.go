package relay

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// firstWriteGate is a memConn whose first WriteMessages waits until open is
// closed: the reader's writer is busy while more messages queue behind it.
type firstWriteGate struct {
	*memConn
	open    chan struct{}
	entered chan struct{} // closed when the first write has begun
	once    sync.Once
}

func (g *firstWriteGate) WriteMessages(msgs []Message, deadline time.Time) error {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		<-g.open
	}
	return g.memConn.WriteMessages(msgs, deadline)
}

// coalesceReaders connects a sender and two readers of topic "t", one with
// Info.Coalesce, each reader's first write held until the returned open
// function is called.
func coalesceReaders(t *testing.T, h *harness) (sender *memConn, merging, plain *firstWriteGate, open func()) {
	t.Helper()
	sender = h.connect(Info{Topic: "t", CanWrite: true})
	merging = &firstWriteGate{memConn: newMemConn(), open: make(chan struct{}), entered: make(chan struct{})}
	plain = &firstWriteGate{memConn: newMemConn(), open: merging.open, entered: make(chan struct{})}
	h.connectGated(merging, Info{Topic: "t", CanRead: true, Coalesce: true})
	h.connectGated(plain, Info{Topic: "t", CanRead: true})
	return sender, merging, plain, func() { close(merging.open) }
}

// connectGated is connectConn for a firstWriteGate.
func (h *harness) connectGated(g *firstWriteGate, info Info) {
	before := h.srv.Stats().Accepted
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.srv.Accept(context.Background(), g, info)
	}()
	wait.For(h.t, "connection registered", func() bool { return h.srv.Stats().Accepted > before })
}

// TestCoalesce pins practable/relay's writer behaviour (crossbar's
// writePump: the messages queued behind the one being written go out in the
// same websocket message, concatenated without delimiter) for a reader with
// Info.Coalesce: what is queued when its writer takes it goes out as one
// message per run of one type, in order, counted in Stats; a reader without
// it gets every message on its own.
func TestCoalesce(t *testing.T) {
	h := newHarness(t, Config{PingInterval: -1})
	sender, merging, plain, open := coalesceReaders(t, h)

	// The first command is being written (the writer is busy) while nine
	// more and then two binary messages queue behind it.
	sender.send(t, Text, "set 0\n")
	<-merging.entered
	<-plain.entered
	var want strings.Builder
	for i := 1; i < 10; i++ {
		cmd := fmt.Sprintf("set %d\n", i)
		want.WriteString(cmd)
		sender.send(t, Text, cmd)
	}
	sender.send(t, Binary, "\x01")
	sender.send(t, Binary, "\x02\x03")
	wait.For(t, "all queued for both readers", func() bool {
		return h.srv.Stats().MessagesIn == 12 && queuedMessages(h, merging) == 11 && queuedMessages(h, plain) == 11
	})
	open()

	if m := merging.recv(t); m.Type != Text || string(m.Data) != "set 0\n" {
		t.Fatalf("first write: %v %q", m.Type, m.Data)
	}
	if m := merging.recv(t); m.Type != Text || string(m.Data) != want.String() {
		t.Fatalf("queued text: got %v %q, want one text message %q", m.Type, m.Data, want.String())
	}
	if m := merging.recv(t); m.Type != Binary || string(m.Data) != "\x01\x02\x03" {
		t.Fatalf("queued binary: got %v %q, want one binary message", m.Type, m.Data)
	}
	merging.expectNothing(t)

	for i := range 10 {
		if m := plain.recv(t); string(m.Data) != fmt.Sprintf("set %d\n", i) {
			t.Fatalf("plain reader message %d: %q", i, m.Data)
		}
	}
	for _, want := range []string{"\x01", "\x02\x03"} {
		if m := plain.recv(t); m.Type != Binary || string(m.Data) != want {
			t.Fatalf("plain reader: %v %q, want binary %q", m.Type, m.Data, want)
		}
	}

	st := h.srv.Stats()
	if st.CoalescedFrames != 2 || st.CoalescedMessages != 11 {
		t.Fatalf("coalesced frames %d, messages %d; want 2 and 11 (9 texts and 2 binaries merged)", st.CoalescedFrames, st.CoalescedMessages)
	}
	wait.For(t, "every message counted out", func() bool {
		cs := connOfConn(h, merging).status()
		return cs.MessagesOut == 12 && cs.BytesOut == uint64(len("set 0\n")+want.Len()+3)
	})
}

// connOfConn returns the server's connection whose transport is tc.
func connOfConn(h *harness, tc Conn) *conn {
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	for c := range h.srv.conns {
		if c.tc == tc {
			return c
		}
	}
	h.t.Fatal("connection not registered")
	return nil
}

// queuedMessages is the number of messages in g's send queue.
func queuedMessages(h *harness, g *firstWriteGate) int {
	c := connOfConn(h, g)
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.q) - c.qHead
}

// TestSendQueueFollowsMaxMessage: a relay configured with a larger message
// limit and no send queue bound gets a queue that holds two of its largest
// messages (practable relays 10 MiB messages; --max-message 10MiB alone
// must be a valid configuration), and the default is unchanged.
func TestSendQueueFollowsMaxMessage(t *testing.T) {
	for _, tc := range []struct{ maxMessage, want int }{
		{0, DefaultSendQueueBytes},
		{DefaultMaxMessageBytes, DefaultSendQueueBytes},
		{10 << 20, 20 << 20},
	} {
		srv, err := NewServer(Config{MaxMessageBytes: tc.maxMessage})
		if err != nil {
			t.Fatalf("max message %d: %v", tc.maxMessage, err)
		}
		if got := srv.Config().SendQueueBytes; got != tc.want {
			t.Errorf("max message %d: send queue %d, want %d", tc.maxMessage, got, tc.want)
		}
	}
}
