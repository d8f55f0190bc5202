package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestTCPStream: bytes from the local service reach the topic as messages
// of at most the chunk size; messages reach the service; a service that
// drops is dialled again.
func TestTCPStream(t *testing.T) {
	r := startRelay(t)
	ln := listenLocal(t)
	cfg := &Config{URL: r.URL, TokenFile: r.tokenFile("lab/ctl"),
		Streams: []StreamConfig{{Name: "ctl", Kind: KindTCP, Topic: "lab/ctl", Addr: ln.Addr().String(), Chunk: 1000}}}
	a := runAgent(t, cfg, Options{})
	svc := accept(t, ln)
	user := r.Dial(t, "lab/ctl", "read", "write")
	wait.For(t, "host and user on the topic", func() bool { return r.TopicConns("lab/ctl") == 2 })

	data := make([]byte, 50_000)
	rand.Read(data)
	go svc.Write(data)
	got, msgs := readN(t, user, len(data))
	if !bytes.Equal(got, data) {
		t.Fatal("service → topic: bytes differ")
	}
	for _, m := range msgs {
		if len(m) > 1000 {
			t.Fatalf("message of %d bytes; chunk is 1000", len(m))
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := user.Write(ctx, client.Text, []byte("move 10\n")); err != nil {
		t.Fatal(err)
	}
	svc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8)
	if _, err := io.ReadFull(svc, buf); err != nil || string(buf) != "move 10\n" {
		t.Fatalf("topic → service: %q, %v", buf, err)
	}

	// The service goes away and comes back: dialled again, data flows.
	svc.Close()
	svc2 := accept(t, ln)
	svc2.Write([]byte("back"))
	if got, _ := readN(t, user, 4); string(got) != "back" {
		t.Fatalf("after the service came back: %q", got)
	}
	// Counters are updated after each write: poll.
	wait.For(t, "status counted", func() bool { return status(t, a, "ctl").BytesToRelay == int64(len(data))+4 })
	st := status(t, a, "ctl")
	if !st.Connected || *st.Local.Connected != true || st.Local.Attempts < 2 || st.BytesToRelay != int64(len(data))+4 || st.MessagesFromRelay != 1 {
		t.Fatalf("status %+v, local %+v", st, *st.Local)
	}
}

// TestTCPLocalRefused: a service that refuses connections is retried with
// backoff, reported in the status, never in a busy loop; the relay link
// stays up meanwhile, and messages for the service are counted as drops.
// The retry delays are held (see heldSleeps): each is checked as it is
// chosen, and nothing may be attempted while one is pending.
func TestTCPLocalRefused(t *testing.T) {
	r := startRelay(t)
	// An address of its own in 127/8: outgoing connections take their
	// ephemeral ports on 127.0.0.1, so none can take this port while
	// nothing listens on it, and the service can start there again below.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.%d.%d.%d:0", 1+mrand.IntN(254), mrand.IntN(256), 1+mrand.IntN(254)))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	cfg := &Config{URL: r.URL, TokenFile: r.tokenFile("lab/ctl"),
		Streams: []StreamConfig{{Name: "ctl", Kind: KindTCP, Topic: "lab/ctl", Addr: addr}}}
	const minDelay, maxDelay = 20 * time.Millisecond, 100 * time.Millisecond
	sleeps := newHeldSleeps()
	a := runAgent(t, cfg, Options{Backoff: Backoff{Min: minDelay, Max: maxDelay}, sleep: sleeps.sleep})
	var pending heldSleep // the last delay, held until the service is back
	for i := range 4 {
		pending = sleeps.next(t, fmt.Sprintf("the delay after refusal %d", i+1))
		bound := min(minDelay<<i, maxDelay) // doubles up to Max; drawn from [bound/2, bound]
		pending.within(t, bound/2, bound)
		if st := status(t, a, "ctl"); st.Local.Attempts != int64(i+1) || !strings.Contains(st.Local.LastError, "refused") {
			t.Fatalf("before delay %d ends: local %+v", i+1, *st.Local)
		}
		if i < 3 {
			pending.release()
		}
	}
	wait.For(t, "link up", func() bool { return status(t, a, "ctl").Connected })
	user := r.Dial(t, "lab/ctl", "read", "write")
	wait.For(t, "user on the topic", func() bool { return r.TopicConns("lab/ctl") == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	user.Write(ctx, client.Text, []byte("lost"))
	wait.For(t, "drop counted", func() bool { return status(t, a, "ctl").Drops == 1 })

	// The service starts: the next attempt connects.
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s again: %v", addr, err)
	}
	defer ln2.Close()
	pending.release()
	accept(t, ln2)
	wait.For(t, "local connected", func() bool { return *status(t, a, "ctl").Local.Connected })
}

// TestTCPHeldWhileLinkDown: what the service sends while the relay link is
// down is sent once the link is up.
func TestTCPHeldWhileLinkDown(t *testing.T) {
	f := newFakeRelay(t)
	var down atomic.Bool
	down.Store(true)
	f.refuse = func(int64) (int, string) {
		if down.Load() {
			return 503, "unavailable"
		}
		return 0, ""
	}
	got := make(chan []byte, 100)
	f.onConn = func(ws *websocket.Conn, _ string) {
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			got <- data
		}
	}
	ln := listenLocal(t)
	a := runAgent(t, &Config{URL: f.url, TokenFile: writeFile(t, "tok", "x.y.z"),
		Streams: []StreamConfig{{Name: "s", Kind: KindTCP, Topic: "t", Addr: ln.Addr().String()}}}, Options{})
	svc := accept(t, ln)
	svc.Write([]byte("one"))
	n := f.accesses.Load()
	wait.For(t, "two more refusals", func() bool { return f.accesses.Load() >= n+2 })
	if status(t, a, "s").Connected {
		t.Fatal("connected while refused")
	}
	down.Store(false)
	select {
	case m := <-got:
		if string(m) != "one" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held data never came")
	}
}
