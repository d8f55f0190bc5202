package wsconn

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// pair returns a server-side Conn and the client websocket talking to it
// over loopback TCP.
func pair(t *testing.T, maxMessage int) (*Conn, *websocket.Conn) {
	t.Helper()
	got := make(chan *Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(w, r, Options{MaxMessageBytes: maxMessage})
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		got <- c
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, _, err := websocket.Dial(ctx, strings.Replace(srv.URL, "http", "ws", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	cl.SetReadLimit(-1)
	t.Cleanup(func() { cl.CloseNow() })
	select {
	case c := <-got:
		t.Cleanup(c.Abort)
		return c, cl
	case <-ctx.Done():
		t.Fatal("no server connection")
	}
	return nil, nil
}

// TestWriteMessagesFraming checks every header length form (7-bit, 16-bit
// and 64-bit lengths) against the library's reader, in one batch.
func TestWriteMessagesFraming(t *testing.T) {
	sc, cl := pair(t, 1<<20)
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20}
	var batch []relay.Message
	for i, n := range sizes {
		typ := relay.Binary
		if i%2 == 0 {
			typ = relay.Text
		}
		batch = append(batch, relay.Message{Type: typ, Data: bytes.Repeat([]byte{'a' + byte(i)}, n)})
	}
	if err := sc.WriteMessages(batch, time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, want := range batch {
		typ, data, err := cl.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if relay.MessageType(typ) != want.Type || !bytes.Equal(data, want.Data) {
			t.Fatalf("got %v message of %d bytes, want %v of %d", typ, len(data), want.Type, len(want.Data))
		}
	}
}

func TestReadMessage(t *testing.T) {
	sc, cl := pair(t, 1024)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl.Write(ctx, websocket.MessageText, []byte("hi"))
	typ, data, err := sc.ReadMessage()
	if err != nil || typ != relay.Text || string(data) != "hi" {
		t.Fatalf("%v %q %v", typ, data, err)
	}
	// Over the limit: the library closes with 1009, reported as a CloseError.
	cl.Write(ctx, websocket.MessageBinary, make([]byte, 1025))
	_, _, err = sc.ReadMessage()
	if ce, ok := err.(*relay.CloseError); !ok || ce.Code != relay.CloseTooBig {
		t.Fatalf("err %v, want CloseError 1009", err)
	}
}

// TestReadMessageAllocations: one allocation per received message, the
// payload handed to the relay.
func TestReadMessageAllocations(t *testing.T) {
	sc, cl := pair(t, 1<<20)
	ctx := context.Background()
	msg := make([]byte, 1024)
	const runs = 500
	go func() {
		for range runs + 10 {
			if cl.Write(ctx, websocket.MessageBinary, msg) != nil {
				return
			}
		}
	}()
	for range 10 { // warm up pools
		sc.ReadMessage()
	}
	allocs := testing.AllocsPerRun(runs-1, func() {
		if _, _, err := sc.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 && !raceEnabled {
		t.Fatalf("%.1f allocations per received message, want at most 1", allocs)
	}
}

// TestControlFramesInterleave: the library's pongs and our batches share the
// socket without corrupting frames.
func TestControlFramesInterleave(t *testing.T) {
	sc, cl := pair(t, 1<<20)
	go func() { // the server reads, so it answers pings
		for {
			if _, _, err := sc.ReadMessage(); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := make([]relay.Message, 64)
	for i := range msgs {
		msgs[i] = relay.Message{Type: relay.Binary, Data: bytes.Repeat([]byte{byte(i)}, 3000)}
	}
	const batches = 50
	go func() {
		for range batches {
			if sc.WriteMessages(msgs, time.Now().Add(5*time.Second)) != nil {
				return
			}
		}
	}()
	pings := make(chan error, 1)
	readDone := make(chan error, 1)
	go func() {
		for i := range batches * len(msgs) {
			_, data, err := cl.Read(ctx)
			if err != nil {
				readDone <- err
				return
			}
			if len(data) != 3000 || data[0] != byte(i%len(msgs)) {
				readDone <- fmt.Errorf("message %d corrupted", i)
				return
			}
		}
		readDone <- nil
		for { // keep reading so that the remaining pongs are seen
			if _, _, err := cl.Read(ctx); err != nil {
				return
			}
		}
	}()
	go func() {
		for range 20 {
			if err := cl.Ping(ctx); err != nil {
				pings <- err
				return
			}
		}
		pings <- nil
	}()
	if err := <-pings; err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := <-readDone; err != nil {
		t.Fatal(err)
	}
}

// tcpPair returns a lockedConn-backed Conn writing to a loopback TCP
// socket whose other end is drained.
func tcpPair(t testing.TB) *Conn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &Conn{nc: newLockedConn(nc)}
}

// TestWriteMessagesAllocations: writing a batch allocates nothing in the
// steady state (scratch is pooled, payloads are not copied).
func TestWriteMessagesAllocations(t *testing.T) {
	c := tcpPair(t)
	msgs := make([]relay.Message, 16)
	for i := range msgs {
		msgs[i] = relay.Message{Type: relay.Binary, Data: make([]byte, 1024)}
	}
	deadline := time.Now().Add(time.Minute)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := c.WriteMessages(msgs, deadline); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 && !raceEnabled {
		t.Fatalf("%.1f allocations per batch, want 0", allocs)
	}
}

func BenchmarkWriteMessages(b *testing.B) {
	c := tcpPair(b)
	msgs := make([]relay.Message, 16)
	for i := range msgs {
		msgs[i] = relay.Message{Type: relay.Binary, Data: make([]byte, 1024)}
	}
	b.ReportAllocs()
	b.SetBytes(16 * 1024)
	for b.Loop() {
		if err := c.WriteMessages(msgs, time.Now().Add(5*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestControlFramesAfterBatchDeadline: a batch's write deadline must not
// outlive it, or the library's next ping or pong fails (regression). In a
// synctest bubble over net.Pipe, so the deadline passes without a wait.
func TestControlFramesAfterBatchDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc, cl := pipePair(t, 1<<20)
		go func() { // the client reads, so it answers pings
			for {
				if _, _, err := cl.Read(context.Background()); err != nil {
					return
				}
			}
		}()
		go func() { // the server reads, so it sees pongs
			for {
				if _, _, err := sc.ReadMessage(); err != nil {
					return
				}
			}
		}()
		deadline := time.Now().Add(time.Second)
		if err := sc.WriteMessages([]relay.Message{{Type: relay.Text, Data: []byte("x")}}, deadline); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(deadline) + time.Nanosecond) // the batch's deadline passes: that is the point
		if err := sc.Ping(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatalf("ping after the batch deadline passed: %v", err)
		}
		if err := sc.WriteMessages([]relay.Message{{Type: relay.Text, Data: []byte("y")}}, time.Now().Add(5*time.Second)); err != nil {
			t.Fatalf("write after: %v", err)
		}
	})
}

// TestLargeBatchInChunks: a batch bigger than a chunk arrives whole and in
// order, and a ping sent meanwhile gets through.
func TestLargeBatchInChunks(t *testing.T) {
	sc, cl := pair(t, 1<<20)
	go func() {
		for {
			if _, _, err := sc.ReadMessage(); err != nil {
				return
			}
		}
	}()
	msgs := make([]relay.Message, 60) // 60 × 100 KiB: many chunks
	for i := range msgs {
		msgs[i] = relay.Message{Type: relay.Binary, Data: bytes.Repeat([]byte{byte(i)}, 100<<10)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- sc.WriteMessages(msgs, time.Now().Add(10*time.Second)) }()
	go func() { errc <- sc.Ping(time.Now().Add(10 * time.Second)) }()
	for i := range msgs {
		_, data, err := cl.Read(ctx)
		if err != nil || len(data) != 100<<10 || data[0] != byte(i) || data[len(data)-1] != byte(i) {
			t.Fatalf("message %d: %d bytes, %v", i, len(data), err)
		}
	}
	go func() { cl.Read(ctx) }() // for the pong
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// TestFramesPipelinedWithTheHandshake: a client that sends its first
// frames in the same packet as the handshake loses none of them (the HTTP
// server's read buffer, which then holds them, is kept).
func TestFramesPipelinedWithTheHandshake(t *testing.T) {
	got := make(chan *Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(w, r, Options{MaxMessageBytes: 1 << 20})
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		got <- c
	}))
	defer srv.Close()
	nc, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	frame := func(payload string) []byte {
		mask := []byte{1, 2, 3, 4}
		b := []byte{0x81, 0x80 | byte(len(payload))}
		b = append(b, mask...)
		for i := range len(payload) {
			b = append(b, payload[i]^mask[i%4])
		}
		return b
	}
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	all := append([]byte(req), frame("first")...)
	all = append(all, frame("second")...)
	if _, err := nc.Write(all); err != nil { // one write: the frames arrive with the handshake
		t.Fatal(err)
	}
	var c *Conn
	select {
	case c = <-got:
		defer c.Abort()
	case <-time.After(5 * time.Second):
		t.Fatal("no server connection")
	}
	// A lost frame would leave ReadMessage waiting: give up after 5 s.
	stop := time.AfterFunc(5*time.Second, c.Abort)
	defer stop.Stop()
	for _, want := range []string{"first", "second"} {
		typ, data, err := c.ReadMessage()
		if err != nil || typ != relay.Text || string(data) != want {
			t.Fatalf("ReadMessage = %v %q %v, want %q", typ, data, err, want)
		}
	}
}
