package server_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// The connect path's benchmarks: the whole server (servertest.Start, its
// middleware, the access handler, the code store, the websocket handshake
// and the relay) driven over loopback by a client that writes HTTP/1.1 and
// the websocket handshakes by hand, so that its own allocations are few and
// the same before and after a change to the server. allocs/op counts the
// whole process, client and server: compare it between two builds, not with
// zero. Run without -race:
//
//	go test -run '^$' -bench Connect -benchmem -count 5 ./internal/server
//
// Results and the figures before the two-step path was made cheaper are in
// docs/BENCHMARKS.md ("Connect path: a cheaper two-step").

// connectBenchTopic is the benchmarks' topic.
const connectBenchTopic = "bench/connect"

// connectBenchClient is one client of the benchmarks.
type connectBenchClient struct {
	host       string
	post       []byte // the access request, prebuilt
	postClose  []byte // the same with Connection: close
	oneStep    []byte // the one-step handshake, prebuilt
	access     net.Conn
	accessRead *bufio.Reader
	wsRead     *bufio.Reader
	buf        []byte
	get        []byte
}

func newConnectBenchClient(b *testing.B) (*connectBenchClient, *servertest.Server) {
	s := servertest.Start(b, func(c *server.Config, d *server.Deps) {
		c.ResultsDir = "" // no jobs API: the connect path only
		// The node alone: servertest's check of every request against
		// the OpenAPI description costs ten times the connect.
		d.Middleware = nil
		// The benchmark's one address makes more requests than one
		// client address may by default.
		c.Limits.RequestsPerSecond = 1e9
	})
	u, err := url.Parse(s.URL)
	if err != nil {
		b.Fatal(err)
	}
	tok := s.Token(b, connectBenchTopic, "read")
	bearer, ok := wire.BearerSubprotocol(tok)
	if !ok {
		b.Fatal("the token cannot be carried in a subprotocol")
	}
	path := "/" + wire.PrefixSession + "/" + connectBenchTopic
	post := "POST " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 0\r\n"
	c := &connectBenchClient{
		host:       u.Host,
		post:       []byte(post + "\r\n"),
		postClose:  []byte(post + "Connection: close\r\n\r\n"),
		oneStep:    []byte(wsHandshake(path, u.Host, "Sec-WebSocket-Protocol: "+wire.Subprotocol+", "+bearer+"\r\n")),
		accessRead: bufio.NewReaderSize(nil, 4096),
		wsRead:     bufio.NewReaderSize(nil, 4096),
		buf:        make([]byte, 0, 1024),
	}
	b.Cleanup(c.closeAccess)
	return c, s
}

// wsHandshake is a websocket opening handshake for path (RFC 6455 §1.3's
// key), with extra header lines.
func wsHandshake(pathAndQuery, host, extra string) string {
	return "GET " + pathAndQuery + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

func (c *connectBenchClient) closeAccess() {
	if c.access != nil {
		c.access.Close()
		c.access = nil
	}
}

// requestCode posts the token and returns the websocket URI's path and
// query. keepAlive: over one connection kept between calls; otherwise a
// new connection each time, closed by the server's answer.
func (c *connectBenchClient) requestCode(keepAlive bool) ([]byte, error) {
	if c.access == nil {
		conn, err := net.Dial("tcp", c.host)
		if err != nil {
			return nil, err
		}
		c.access = conn
		c.accessRead.Reset(conn)
	}
	req := c.post
	if !keepAlive {
		req = c.postClose
		defer c.closeAccess()
	}
	if _, err := c.access.Write(req); err != nil {
		return nil, err
	}
	status, length, err := readBenchHeader(c.accessRead)
	if err != nil {
		return nil, err
	}
	if length < 0 || length > 4096 {
		return nil, fmt.Errorf("access answer without a usable Content-Length (%d)", length)
	}
	c.buf = c.buf[:length]
	if _, err := io.ReadFull(c.accessRead, c.buf); err != nil {
		return nil, err
	}
	if status != 200 {
		return nil, fmt.Errorf("access: HTTP %d: %s", status, c.buf)
	}
	// {"uri":"ws://host/session/…?code=…"}: the URI has nothing JSON
	// escapes.
	const field = `"uri":"ws://`
	i := bytes.Index(c.buf, []byte(field))
	if i < 0 {
		return nil, fmt.Errorf("access: answer without a ws:// uri: %s", c.buf)
	}
	rest := c.buf[i+len(field):]
	j, k := bytes.IndexByte(rest, '/'), bytes.IndexByte(rest, '"')
	if j < 0 || k < j {
		return nil, fmt.Errorf("access: answer without a ws:// uri: %s", c.buf)
	}
	return rest[j:k], nil
}

// openAndClose opens a websocket with handshake, then closes it with 1000
// and waits for the server's close frame and the end of the connection.
func (c *connectBenchClient) openAndClose(handshake []byte) error {
	conn, err := net.Dial("tcp", c.host)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(handshake); err != nil {
		return err
	}
	c.wsRead.Reset(conn)
	status, _, err := readBenchHeader(c.wsRead)
	if err != nil {
		return err
	}
	if status != 101 {
		body, _ := io.ReadAll(io.LimitReader(c.wsRead, 1024))
		return fmt.Errorf("websocket: HTTP %d: %s", status, body)
	}
	// A masked close frame, code 1000, mask key 0.
	if _, err := conn.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8}); err != nil {
		return err
	}
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(c.wsRead, hdr[:]); err != nil {
			return fmt.Errorf("websocket: waiting for the close frame: %w", err)
		}
		n := int(hdr[1] & 0x7f)
		if n > 125 {
			return fmt.Errorf("websocket: unexpected frame of length code %d", n)
		}
		if _, err := c.wsRead.Discard(n); err != nil {
			return err
		}
		if hdr[0]&0x0f == 0x8 {
			break
		}
	}
	if _, err := c.wsRead.ReadByte(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("websocket: after the close frame: %v, want the end of the connection", err)
	}
	return nil
}

// readBenchHeader reads a response's status line and header and returns the
// status and Content-Length (-1 without one).
func readBenchHeader(br *bufio.Reader) (status, length int, err error) {
	length = -1
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case first:
			if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
				return 0, 0, fmt.Errorf("bad status line %q", line)
			}
			if status, err = strconv.Atoi(string(line[9:12])); err != nil {
				return 0, 0, fmt.Errorf("bad status line %q", line)
			}
		case len(line) == 0:
			return status, length, nil
		case len(line) > 15 && bytes.EqualFold(line[:15], []byte("Content-Length:")):
			if length, err = strconv.Atoi(string(bytes.TrimSpace(line[15:]))); err != nil {
				return 0, 0, fmt.Errorf("bad Content-Length %q", line)
			}
		}
	}
}

// BenchmarkConnectTwoStep: the access request (over a keep-alive
// connection, or a new connection each time), then the websocket with the
// code, closed at once; one op is one connection admitted and closed.
func BenchmarkConnectTwoStep(b *testing.B) {
	for _, keepAlive := range []bool{true, false} {
		b.Run("keepalive="+strconv.FormatBool(keepAlive), func(b *testing.B) {
			c, _ := newConnectBenchClient(b)
			b.ReportAllocs()
			for b.Loop() {
				pathAndQuery, err := c.requestCode(keepAlive)
				if err == nil {
					c.get = append(c.get[:0], wsHandshake(string(pathAndQuery), c.host, "")...)
					err = c.openAndClose(c.get)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConnectOneStep: the websocket with the token in the bearer
// subprotocol, closed at once (the reference the two-step flow is compared
// with).
func BenchmarkConnectOneStep(b *testing.B) {
	c, _ := newConnectBenchClient(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.openAndClose(c.oneStep); err != nil {
			b.Fatal(err)
		}
	}
}
