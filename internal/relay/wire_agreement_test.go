package relay

// The relay may import nothing outside the standard library, so it keeps its
// own copy of the wire contract's close codes and reasons. This test (a test
// may import pkg/wire: test imports are not the package's) checks the copy
// against pkg/wire, code by code, and checks that the code the relay sends
// for each reason it decides alone is the one pkg/wire states.

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

func TestCloseCodesAgreeWithWire(t *testing.T) {
	pairs := []struct {
		relay CloseCode
		wire  wire.CloseCode
	}{
		{CloseNormal, wire.CloseNormal},
		{CloseGoingAway, wire.CloseGoingAway},
		{CloseInvalidData, wire.CloseInvalidData},
		{ClosePolicy, wire.ClosePolicy},
		{CloseTooBig, wire.CloseTooBig},
		{CloseInternal, wire.CloseInternal},
		{CloseTokenExpired, wire.CloseTokenExpired},
		{CloseDenied, wire.CloseDenied},
		{CloseNoHost, wire.CloseNoHost},
		{CloseSlowConsumer, wire.CloseSlowConsumer},
		{CloseSuperseded, wire.CloseSuperseded},
	}
	paired := map[wire.CloseCode]bool{}
	for _, p := range pairs {
		if uint16(p.relay) != uint16(p.wire) {
			t.Errorf("relay's close code %d is %d (%s) in pkg/wire", p.relay, p.wire, p.wire)
		}
		paired[p.wire] = true
	}
	// Every close the server sends has its relay constant.
	for _, cl := range wire.Closes() {
		if !paired[cl.Code] && cl.Code != wire.CloseAbnormal {
			t.Errorf("pkg/wire close %d (%s) has no relay constant", cl.Code, cl.Name)
		}
	}
}

func TestCloseReasonsAgreeWithWire(t *testing.T) {
	names := map[wire.CloseReason]bool{}
	for _, r := range CloseReasons() {
		w := wire.CloseReason(r.String())
		names[w] = true
		if !w.Known() {
			t.Errorf("relay close reason %q is not a pkg/wire close reason", w)
		}
	}
	for _, w := range wire.CloseReasons() {
		if !names[w] {
			t.Errorf("pkg/wire close reason %q is not one of the relay's", w)
		}
	}
}

// failingPing is a memConn whose peer never answers pings. It records the
// code of the close frame the relay sends, which memConn would not once the
// relay has aborted it (as it does a peer that does not answer).
type failingPing struct {
	*memConn
	sent atomic.Uint32
}

func (*failingPing) Ping(time.Time) error { return errors.New("no pong") }

func (f *failingPing) Close(code CloseCode, reason string) error {
	f.sent.CompareAndSwap(0, uint32(code))
	return f.memConn.Close(code, reason)
}

// TestCloseReasonCodesAgreeWithWire: for every reason the relay decides on
// its own, the code it sends is the one pkg/wire (and so the metrics and the
// docs) state. The reasons a caller decides (denied, no_host, superseded,
// server_closed through CloseWhere) carry the caller's code; peer_closed,
// read_error and write_error send none.
func TestCloseReasonCodesAgreeWithWire(t *testing.T) {
	type outcome struct {
		why  CloseReason
		code CloseCode
	}
	check := func(t *testing.T, got outcome) {
		t.Helper()
		want, ok := wire.CloseReason(got.why.String()).Code()
		if !ok || uint16(want) != uint16(got.code) {
			t.Errorf("relay closed for %s with %d; pkg/wire states %d (sends one: %v)", got.why, got.code, want, ok)
		}
	}
	// accept runs one connection and reports why it closed, and the code.
	accept := func(t *testing.T, h *harness, m *memConn, info Info, act func()) outcome {
		t.Helper()
		h.connectConn(m, info)
		if act != nil {
			act()
		}
		m.waitClosed(t)
		var why CloseReason
		wait.For(t, "accept returns", func() bool { r, ok := h.reason(m); why = r; return ok })
		return outcome{why, m.closeCode()}
	}

	t.Run("token_expired", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { // fake time: the second passes at once
			h := newHarness(t, Config{PingInterval: -1})
			check(t, accept(t, h, newMemConn(), Info{Topic: "t", CanRead: true, ExpiresAt: time.Now().Add(time.Second)}, nil))
		})
	})
	t.Run("message_too_big and invalid_utf8", func(t *testing.T) {
		h := newHarness(t, Config{MaxMessageBytes: 10, SendQueueBytes: 1 << 10})
		big := newMemConn()
		check(t, accept(t, h, big, rw("t"), func() { big.send(t, Binary, "01234567890") }))
		bad := newMemConn()
		check(t, accept(t, h, bad, rw("t"), func() { bad.in <- Message{Type: Text, Data: []byte{0xff}} }))
	})
	t.Run("policy_violation", func(t *testing.T) {
		h := newHarness(t, Config{})
		m := newMemConn()
		check(t, accept(t, h, m, Info{Topic: "stats", CanRead: true, SystemTopic: true}, func() { m.send(t, Text, "x") }))
	})
	t.Run("slow_consumer", func(t *testing.T) {
		h := newHarness(t, Config{SendQueueBytes: 8 << 10, MaxMessageBytes: 1 << 10, SlowConsumer: PolicyClose, WriteTimeout: time.Minute, CloseTimeout: time.Minute})
		w := h.connect(rw("t"))
		slow := newMemConn()
		slow.stall = make(chan struct{})
		check(t, accept(t, h, slow, Info{Topic: "t", CanRead: true}, func() {
			for range 100 {
				w.send(t, Binary, string(make([]byte, 900)))
			}
			// The close is usually decided while the write loop is stuck
			// in its first write to the stalled peer; the close frame can
			// follow only once that write ends (a peer that never reads
			// again is aborted after CloseTimeout, with no code). So the
			// stall ends once the close is decided, never before: before,
			// the reader could drain its queue and never overflow.
			wait.For(t, "the close to be decided", func() bool { return h.closingOrGone(slow) })
			close(slow.stall)
		}))
	})
	t.Run("ping_timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { // fake time: the first ping comes at once
			srv, err := NewServer(Config{PingInterval: time.Minute, PongTimeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			m := &failingPing{memConn: newMemConn()}
			why := srv.Accept(context.Background(), m, Info{Topic: "t", CanRead: true})
			check(t, outcome{why, CloseCode(m.sent.Load())})
		})
	})
	t.Run("denied at admission", func(t *testing.T) {
		srv, err := NewServer(Config{Denied: func(*Info) bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		m := newMemConn()
		check(t, outcome{srv.Accept(context.Background(), m, rw("t")), m.closeCode()})
	})
	t.Run("shutdown", func(t *testing.T) {
		srv, err := NewServer(Config{})
		if err != nil {
			t.Fatal(err)
		}
		m := newMemConn()
		done := make(chan CloseReason, 1)
		go func() { done <- srv.Accept(context.Background(), m, rw("t")) }()
		wait.For(t, "registered", func() bool { return srv.Stats().Connections == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		check(t, outcome{<-done, m.closeCode()})
	})
	t.Run("pair_closed", func(t *testing.T) {
		var why CloseReason // a's; written by a's goroutine before AcceptPair returns
		srv, err := NewServer(Config{PingInterval: -1, OnClose: func(cs ConnStatus, r CloseReason) {
			if cs.Info.Subject == "a" {
				why = r
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		a, b := newMemConn(), newMemConn()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.AcceptPair(context.Background(), a, Info{Topic: "pair:x", Identity: Identity{Subject: "a"}, CanRead: true, CanWrite: true}, b, Info{Topic: "pair:x", Identity: Identity{Subject: "b"}, CanRead: true, CanWrite: true})
		}()
		wait.For(t, "pair registered", func() bool { return srv.Stats().Connections == 2 })
		b.peerClose(CloseNormal)
		<-done
		check(t, outcome{why, a.closeCode()})
	})
}

// closingOrGone reports whether the relay has decided to close m's
// connection, or has already let it go.
func (h *harness) closingOrGone(m *memConn) bool {
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	for c := range h.srv.conns {
		if c.tc == m {
			return c.closingFlag.Load()
		}
	}
	return true
}
