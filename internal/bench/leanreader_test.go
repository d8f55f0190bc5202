package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestLeanReaderAgainstLibrary checks the lean reader against the websocket
// library as the server: fragmented and whole messages, a ping that must be
// answered, and the closing handshake with the server's code and reason.
func TestLeanReaderAgainstLibrary(t *testing.T) {
	pinged := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("code") != "c0de" || r.Header.Get("Origin") != "http://example.test" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		ctx := ws.CloseRead(context.Background()) // handles the pong and the close answer
		_ = ws.Write(ctx, websocket.MessageBinary, []byte("one"))
		mw, err := ws.Writer(ctx, websocket.MessageText)
		if err != nil {
			return
		}
		for _, part := range []string{"fra", "gmen", "ted"} {
			_, _ = mw.Write([]byte(part))
		}
		_ = mw.Close()
		big := bytes.Repeat([]byte{7}, 70000) // 64-bit length
		_ = ws.Write(ctx, websocket.MessageBinary, big)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		pinged <- ws.Ping(pctx)
		cancel()
		_ = ws.Write(ctx, websocket.MessageBinary, []byte("after ping"))
		_ = ws.Close(4003, "denied")
	}))
	defer srv.Close()
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/session/t?code=c0de"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := dialLean(ctx, strings.Replace(wsURL, "c0de", "wrong", 1), nil, 16); err == nil || !strings.Contains(err.Error(), "HTTP 403") || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("refused handshake: err = %v, want HTTP 403 without the code", err)
	}
	c, err := dialLean(ctx, wsURL, http.Header{"Origin": {"http://example.test"}}, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for _, want := range [][]byte{[]byte("one"), []byte("fragmented"), bytes.Repeat([]byte{7}, 70000), []byte("after ping")} {
		got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading %q: %v", want[:min(len(want), 10)], err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes %q…, want %d bytes %q…", len(got), got[:min(len(got), 10)], len(want), want[:min(len(want), 10)])
		}
	}
	if err := <-pinged; err != nil {
		t.Fatalf("the server's ping was not answered: %v", err)
	}
	_, err = c.ReadMessage()
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != 4003 || ce.Reason != "denied" {
		t.Fatalf("after the close: err = %v, want close 4003 denied", err)
	}
}

// TestLeanReaderClose checks that Close completes the closing handshake
// both with no reader running and with one blocked in ReadMessage.
func TestLeanReaderClose(t *testing.T) {
	closed := make(chan websocket.StatusCode, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		_, _, err = ws.Read(context.Background())
		closed <- websocket.CloseStatus(err)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
	for _, withReader := range []bool{false, true} {
		c, err := dialLean(ctx, uri, nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		readErr := make(chan error, 1)
		if withReader {
			go func() { _, err := c.ReadMessage(); readErr <- err }()
			// Wait until the reader holds the read lock, so that Close must
			// leave the close frame to it.
			wait.For(t, "the reader to hold the read lock", func() bool {
				if c.rmu.TryLock() {
					c.rmu.Unlock()
					return false
				}
				return true
			})
		}
		if err := c.Close(); err != nil {
			t.Fatalf("reader running %v: Close: %v", withReader, err)
		}
		if code := <-closed; code != websocket.StatusNormalClosure {
			t.Fatalf("reader running %v: server saw close status %d, want 1000", withReader, code)
		}
		if withReader {
			var ce *client.CloseError
			if err := <-readErr; !errors.As(err, &ce) || ce.Code != 1000 {
				t.Fatalf("blocked ReadMessage returned %v, want the close 1000", err)
			}
		}
	}
}

// TestLeanReaderProtocolErrors feeds frames a server must not send and
// checks that each is refused with a 1002 close.
func TestLeanReaderProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"masked", []byte{0x82, 0x81, 1, 2, 3, 4, 'x'}, "masked"},
		{"reserved bits", []byte{0xc2, 0x01, 'x'}, "reserved"},
		{"continuation first", []byte{0x80, 0x01, 'x'}, "continuation"},
		{"new message inside a fragmented one", []byte{0x02, 0x01, 'x', 0x82, 0x01, 'y'}, "inside"},
		{"unknown data opcode", []byte{0x83, 0x01, 'x'}, "opcode"},
		{"unknown control opcode", []byte{0x8b, 0x00}, "opcode"},
		{"fragmented ping", []byte{0x09, 0x00}, "control"},
		{"long ping", append([]byte{0x89, 126, 0, 126}, make([]byte, 126)...), "control"},
		{"too large", []byte{0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0}, "too large"},
		{"64-bit length with the top bit", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}, "most significant bit"},
		{"close with a 1-byte body", []byte{0x88, 0x01, 0x03}, "1-byte"},
		{"close code 1005", []byte{0x88, 0x02, 0x03, 0xed}, "1005"},
		{"close code 999", []byte{0x88, 0x02, 0x03, 0xe7}, "999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := net.Pipe()
			defer srv.Close()
			c := &leanConn{conn: cli, br: bufio.NewReader(cli), closed: make(chan struct{})}
			defer c.CloseNow()
			go func() { _, _ = srv.Write(tc.frame) }()
			sent := make(chan []byte, 1)
			go func() {
				p := make([]byte, 8)
				n, _ := io.ReadAtLeast(srv, p, 8)
				sent <- p[:n]
			}()
			_, err := c.ReadMessage()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one about %q", err, tc.want)
			}
			// The masked close frame carries 1002.
			p := <-sent
			if len(p) != 8 || p[0] != 0x88 || p[1] != 0x82 || p[6]^p[2] != 0x03 || p[7]^p[3] != 0xea {
				t.Fatalf("close frame sent: % x, want a masked close with 1002", p)
			}
		})
	}
}

// TestLeanReaderAllocations: reading and observing a message allocates
// nothing once the buffer has grown, so the reader costs the client what
// tcp-baseline's does.
func TestLeanReaderAllocations(t *testing.T) {
	const size, n = 1024, 1100
	var stream bytes.Buffer
	payload := make([]byte, size)
	for i := range n {
		binary.LittleEndian.PutUint64(payload[0:], uint64(time.Now().UnixNano()))
		binary.LittleEndian.PutUint64(payload[8:], uint64(i)|flagMeasured)
		stream.Write([]byte{0x82, 126, size >> 8, size & 0xff})
		stream.Write(payload)
	}
	c := &leanConn{br: bufio.NewReaderSize(&stream, baselineReadBuffer), buf: make([]byte, 0, size), closed: make(chan struct{})}
	r := newReader(c, 0, 1, new(window))
	var ready atomic.Int64
	allocs := testing.AllocsPerRun(1000, func() {
		data, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		r.observe(data, &ready)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message, want 0", allocs)
	}
	if r.received < 1000 || r.gaps != 0 {
		t.Errorf("received %d, gaps %d: the frames were not parsed in order", r.received, r.gaps)
	}
}
