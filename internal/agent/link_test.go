package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// acceptAndDrain runs a local service that accepts every connection and
// reads it until it ends.
func acceptAndDrain(t *testing.T) net.Listener {
	ln := listenLocal(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln
}

func fdCount(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestLinkReconnectsWithoutLeaks: 2,000 connect–close cycles against a
// relay that closes every connection at once leave no goroutine and no file
// descriptor behind.
func TestLinkReconnectsWithoutLeaks(t *testing.T) {
	const cycles = 2000
	f := newFakeRelay(t)
	closes := []websocket.StatusCode{websocket.StatusGoingAway, websocket.StatusNormalClosure, 4001, websocket.StatusInternalError}
	f.onConn = func(ws *websocket.Conn, _ string) {
		n := f.accepts.Load()
		if n%5 == 0 {
			ws.CloseNow() // no close handshake: an abrupt end
			return
		}
		ws.Close(closes[n%int64(len(closes))], "fake")
	}
	ln := acceptAndDrain(t)
	tok := writeFile(t, "tok", "tok.en.x")
	cfg := &Config{URL: f.url, TokenFile: tok, Streams: []StreamConfig{{Name: "s", Kind: KindTCP, Topic: "t", Addr: ln.Addr().String()}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	goroutines, fds := runtime.NumGoroutine(), fdCount(t)

	a, err := New(cfg, Options{Backoff: Backoff{Min: 20 * time.Microsecond, Max: 100 * time.Microsecond, Stable: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	wait.Within(t, 3*time.Minute, fmt.Sprintf("%d connect-close cycles", cycles), func() bool { return f.accepts.Load() >= cycles })
	if st := status(t, a, "s"); st.Reconnects < cycles-10 || st.LastError == "" {
		t.Errorf("status after %d cycles: %+v", cycles, st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var g, n int
	defer func() {
		if t.Failed() {
			buf := make([]byte, 1<<20)
			t.Logf("after %d reconnects: %d goroutines (before %d), %d fds (before %d)\n%s",
				cycles, g, goroutines, n, fds, buf[:runtime.Stack(buf, true)])
		}
	}()
	wait.For(t, "goroutines and descriptors back to where they were", func() bool {
		runtime.GC()
		g, n = runtime.NumGoroutine(), fdCount(t)
		return g <= goroutines+2 && n <= fds+2
	})
	t.Logf("%d cycles: goroutines %d → %d, fds %d → %d", f.accepts.Load(), goroutines, g, fds, n)
}

// TestLinkCloseCodes: 4003 and 4009 back off long; 4001 reconnects at
// once with the token file read again. The retry delays are held (see
// heldSleeps), so the test sees each one chosen instead of timing them.
func TestLinkCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code websocket.StatusCode
		long bool
	}{{4003, true}, {4009, true}, {4001, false}, {websocket.StatusGoingAway, false}} {
		t.Run(tc.code.String(), func(t *testing.T) {
			f := newFakeRelay(t)
			f.onConn = func(ws *websocket.Conn, _ string) { ws.Close(tc.code, "fake") }
			tok := writeFile(t, "tok", "first.token.x")
			var logs logBuffer
			sleeps := newHeldSleeps()
			a := runAgent(t, &Config{URL: f.url, TokenFile: tok, Streams: []StreamConfig{{Name: "s", Kind: KindShell, Topic: "t", Addr: "127.0.0.1:1"}}},
				Options{Logger: logs.logger(), Backoff: Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond, Long: time.Hour}, sleep: sleeps.sleep})
			delay := sleeps.next(t, "the delay after the first connection closed")
			if err := os.WriteFile(tok, []byte("second.token.x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.long {
				delay.within(t, time.Hour/2, time.Hour) // Long, with jitter
				// Nothing is attempted while the delay is pending.
				if n := f.accesses.Load(); n != 1 {
					t.Fatalf("%d access requests after close %d; want 1 (long backoff)", n, tc.code)
				}
				if !strings.Contains(logs.String(), "level=ERROR") {
					t.Errorf("close %d not logged as an error:\n%s", tc.code, logs.String())
				}
			} else {
				delay.within(t, time.Millisecond/2, time.Millisecond) // Min, with jitter
				delay.release()
				wait.For(t, "reconnect with the new token", func() bool {
					tokens := f.tokensSeen()
					return tokens[len(tokens)-1] == "second.token.x"
				})
			}
			if st := status(t, a, "s"); !strings.Contains(st.LastError, strconv.Itoa(int(tc.code))) {
				t.Errorf("last error %q does not name %d", st.LastError, tc.code)
			}
		})
	}
}

// TestLinkAccessRefused: refusals are retried with growing delays, named in
// the status, and never spin; revocation refusals back off long. The
// retry delays are held (see heldSleeps): each is checked as it is chosen,
// and nothing may be attempted while one is pending.
func TestLinkAccessRefused(t *testing.T) {
	const minDelay, maxDelay = 10 * time.Millisecond, 40 * time.Millisecond
	f := newFakeRelay(t)
	f.refuse = func(int64) (int, string) { return 401, "token_expired" }
	sleeps := newHeldSleeps()
	a := runAgent(t, &Config{URL: f.url, TokenFile: writeFile(t, "tok", "x.y.z"), Streams: []StreamConfig{{Name: "s", Kind: KindShell, Topic: "t", Addr: "127.0.0.1:1"}}},
		Options{Backoff: Backoff{Min: minDelay, Max: maxDelay}, sleep: sleeps.sleep})
	for i := range 5 {
		delay := sleeps.next(t, fmt.Sprintf("the delay after refusal %d", i+1))
		bound := min(minDelay<<i, maxDelay) // doubles up to Max; drawn from [bound/2, bound]
		delay.within(t, bound/2, bound)
		if n := f.accesses.Load(); n != int64(i+1) {
			t.Fatalf("%d access requests before delay %d ends; want %d", n, i+1, i+1)
		}
		if st := status(t, a, "s"); st.Connected || st.LastErrAt == nil || !strings.Contains(st.LastError, "token_expired") {
			t.Fatalf("status %+v", st)
		}
		delay.release()
	}

	f2 := newFakeRelay(t)
	f2.refuse = func(int64) (int, string) { return 403, "booking_denied" }
	sleeps2 := newHeldSleeps()
	runAgent(t, &Config{URL: f2.url, TokenFile: writeFile(t, "tok", "x.y.z"), Streams: []StreamConfig{{Name: "s", Kind: KindShell, Topic: "t", Addr: "127.0.0.1:1"}}},
		Options{Backoff: Backoff{Min: time.Millisecond, Max: time.Millisecond, Long: time.Hour}, sleep: sleeps2.sleep})
	sleeps2.next(t, "the delay after booking_denied").within(t, time.Hour/2, time.Hour)
	if n := f2.accesses.Load(); n != 1 {
		t.Fatalf("%d attempts after booking_denied; want 1", n)
	}
}

// TestLinkTokenFileUnreadable: a missing token file is an error in the
// status and is retried; once it is back the link comes up.
func TestLinkTokenFileUnreadable(t *testing.T) {
	f := newFakeRelay(t)
	f.onConn = holdOpen
	tok := writeFile(t, "tok", "x.y.z")
	cfg := &Config{URL: f.url, TokenFile: tok, Streams: []StreamConfig{{Name: "s", Kind: KindShell, Topic: "t", Addr: "127.0.0.1:1"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	os.Remove(tok)
	a := startAgent(t, cfg, Options{})
	wait.For(t, "token file error", func() bool { return strings.Contains(status(t, a, "s").LastError, "token file") })
	if f.accesses.Load() != 0 {
		t.Fatal("access requested without a token")
	}
	os.WriteFile(tok, []byte("x.y.z"), 0o600)
	wait.For(t, "connected", func() bool { return status(t, a, "s").Connected })
}

func TestRetryDelay(t *testing.T) {
	l := &link{a: &Agent{backoff: Backoff{Min: time.Second, Max: 8 * time.Second, Stable: time.Minute, Long: time.Hour}.withDefaults()},
		log: slog.New(slog.DiscardHandler), topic: "t"}
	bo := &backoff{p: l.a.backoff}
	for i := range 6 {
		d := l.retryDelay(errors.New("network"), bo)
		bound := min(time.Second<<i, 8*time.Second)
		if d < bound/2 || d > bound {
			t.Fatalf("attempt %d: delay %v outside [%v, %v]", i, d, bound/2, bound)
		}
	}
	if d := l.retryDelay(&client.CloseError{Code: 4001}, bo); d > time.Second {
		t.Fatalf("4001: delay %v, want the minimum", d)
	}
	if d := l.retryDelay(&client.CloseError{Code: 1008, Reason: "the first message must be a hello"}, bo); d > 8*time.Second {
		t.Fatalf("1008 for a protocol error: delay %v, want the normal backoff", d)
	}
	for _, err := range []error{&client.CloseError{Code: 4003}, &client.CloseError{Code: 4009},
		&client.CloseError{Code: 1008, Reason: "label_forbidden: the token does not allow label role=x"},
		&client.AccessError{Status: 403, Code: "booking_denied"}, &client.AccessError{Status: 403, Code: "token_revoked"}} {
		if d := l.retryDelay(err, bo); d < 30*time.Minute {
			t.Fatalf("%v: delay %v, want long", err, d)
		}
	}
	bo.done(time.Minute)
	if d := l.retryDelay(&client.AccessError{Status: 401, Code: "token_expired"}, bo); d > time.Second {
		t.Fatalf("after a stable connection: delay %v, want the minimum", d)
	}
}

func TestRedact(t *testing.T) {
	in := `client: dial: failed to WebSocket dial: Get "ws://h/shell/t/S?code=Kx2bq.n1": refused; Authorization: Bearer abc.def.ghi`
	out := redact(in)
	if strings.Contains(out, "Kx2bq") || strings.Contains(out, "abc.def") || !strings.Contains(out, "code=REDACTED") {
		t.Fatalf("redact: %s", out)
	}
}
