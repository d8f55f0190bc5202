package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// A minimal access client for the access scenario's --raw mode: HTTP/1.1
// and the websocket opening and closing handshakes (RFC 6455) written by
// hand on plain sockets, so that the client takes as little of the machine
// as possible and the relay gets the rest. It speaks the same protocol as
// pkg/client: POST the token, GET the websocket URI with the code, close
// with 1000; or, in one step, GET the websocket with the token in the
// bearer subprotocol, close with 1000.

// The opening handshake's fixed key and the answer it must get (RFC 6455
// section 1.3's example).
const (
	rawWSKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rawWSAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
	// rawMaxHeader bounds a response's header.
	rawMaxHeader = 16 << 10
)

// rawClient is one client: a keep-alive connection for the access requests
// and a websocket at a time.
type rawClient struct {
	host string // host:port of the relay
	post []byte // the access request, prebuilt
	// oneStep: the websocket is opened at oneStepPath with the header
	// line bearerLine (Sec-WebSocket-Protocol with the token), no access
	// request.
	oneStep     bool
	oneStepPath string
	bearerLine  string
	dialer      func(i uint64) *net.Dialer
	next        func() uint64

	// noKeepAlive: each access request on a new connection (from the
	// source addresses in turn), asking the server to close it.
	noKeepAlive bool

	pc  net.Conn // keep-alive connection for access requests
	pbr *bufio.Reader
	buf []byte
}

func newRawClient(baseURL, prefix, topic, token string, oneStep, noKeepAlive bool, dialer func(uint64) *net.Dialer, next func() uint64) (*rawClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "http" {
		return nil, fmt.Errorf("bench: raw client: base URL %q: want http://host:port", baseURL)
	}
	req := fmt.Sprintf("POST /%s/%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: 0\r\n", prefix, topic, u.Host, token)
	if noKeepAlive {
		req += "Connection: close\r\n"
	}
	req += "\r\n"
	c := &rawClient{host: u.Host, post: []byte(req), noKeepAlive: noKeepAlive, dialer: dialer, next: next, buf: make([]byte, 0, 512)}
	if oneStep {
		bearer, ok := wire.BearerSubprotocol(token)
		if !ok {
			return nil, errors.New("bench: raw client: the token cannot be carried in a subprotocol")
		}
		c.oneStep, c.oneStepPath = true, "/"+prefix+"/"+topic
		c.bearerLine = "Sec-WebSocket-Protocol: " + wire.Subprotocol + ", " + bearer + "\r\n"
	}
	return c, nil
}

func (c *rawClient) close() {
	if c.pc != nil {
		c.pc.Close()
		c.pc = nil
	}
}

// access posts the token and returns the path and query of the websocket
// URI. A keep-alive connection the server closed is replaced once.
func (c *rawClient) access(ctx context.Context) (string, error) {
	for attempt := 0; ; attempt++ {
		fresh := c.pc == nil
		if fresh {
			d := &net.Dialer{}
			if c.noKeepAlive {
				d = c.dialer(c.next())
			}
			pc, err := d.DialContext(ctx, "tcp", c.host)
			if err != nil {
				return "", err
			}
			c.pc, c.pbr = pc, bufio.NewReaderSize(pc, 4096)
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = c.pc.SetDeadline(dl)
		}
		uri, err := c.roundTrip()
		if err == nil {
			if c.noKeepAlive {
				c.close()
			}
			return uri, nil
		}
		c.close()
		var se *rawStatusError
		if fresh || attempt > 0 || errors.As(err, &se) || ctx.Err() != nil {
			return "", err
		}
	}
}

// rawStatusError is a refusal by the relay.
type rawStatusError struct {
	status int
	body   string
}

func (e *rawStatusError) Error() string {
	return fmt.Sprintf("bench: access refused: HTTP %d: %s", e.status, strings.TrimSpace(e.body))
}

func (c *rawClient) roundTrip() (string, error) {
	if _, err := c.pc.Write(c.post); err != nil {
		return "", err
	}
	status, length, err := readHeader(c.pbr)
	if err != nil {
		return "", err
	}
	if length < 0 || length > 64<<10 {
		return "", fmt.Errorf("bench: access response without a usable Content-Length (%d)", length)
	}
	if cap(c.buf) < length {
		c.buf = make([]byte, length)
	}
	body := c.buf[:length]
	if _, err := io.ReadFull(c.pbr, body); err != nil {
		return "", err
	}
	if status != 200 {
		return "", &rawStatusError{status: status, body: string(body)}
	}
	var ok struct {
		URI string `json:"uri"`
	}
	if err := json.Unmarshal(body, &ok); err != nil {
		return "", fmt.Errorf("bench: access response: %w", err)
	}
	u, err := url.Parse(ok.URI)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("bench: access response: uri %q", ok.URI)
	}
	return u.RequestURI(), nil
}

// readHeader reads a response's status line and header and returns the
// status and Content-Length (-1 if none).
func readHeader(br *bufio.Reader) (status, length int, err error) {
	length = -1
	n := 0
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, 0, err
		}
		if n += len(line); n > rawMaxHeader {
			return 0, 0, errors.New("bench: response header too large")
		}
		line = bytes.TrimRight(line, "\r\n")
		if first {
			// HTTP/1.1 200 OK
			f := bytes.Fields(line)
			if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
				return 0, 0, fmt.Errorf("bench: bad status line %q", line)
			}
			if status, err = strconv.Atoi(string(f[1])); err != nil {
				return 0, 0, fmt.Errorf("bench: bad status line %q", line)
			}
			continue
		}
		if len(line) == 0 {
			return status, length, nil
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && len(k) == len("Content-Length") && bytes.EqualFold(k, []byte("Content-Length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return 0, 0, fmt.Errorf("bench: bad Content-Length %q", v)
			}
		}
	}
}

// exchange opens the websocket at path (with its code) from the next source
// address; closeWS then closes it with 1000 and waits for the relay's close.
func (c *rawClient) exchange(ctx context.Context, path string) (net.Conn, *bufio.Reader, error) {
	conn, err := c.dialer(c.next()).DialContext(ctx, "tcp", c.host)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	req := c.buf[:0]
	req = append(req, "GET "...)
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, c.host...)
	req = append(req, "\r\n"...)
	req = append(req, c.bearerLine...) // "" in two steps
	req = append(req, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "+rawWSKey+"\r\nSec-WebSocket-Version: 13\r\n\r\n"...)
	c.buf = req
	if _, err := conn.Write(req); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 512)
	status, accept, protocol, err := readUpgrade(br)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if status != 101 || accept != rawWSAccept {
		conn.Close()
		return nil, nil, fmt.Errorf("bench: websocket refused: HTTP %d (accept %q)", status, accept)
	}
	if c.oneStep && protocol != wire.Subprotocol {
		conn.Close()
		return nil, nil, fmt.Errorf("bench: one-step websocket selected subprotocol %q, want %s", protocol, wire.Subprotocol)
	}
	return conn, br, nil
}

// readUpgrade reads the answer to the opening handshake: the status,
// Sec-WebSocket-Accept and Sec-WebSocket-Protocol.
func readUpgrade(br *bufio.Reader) (status int, accept, protocol string, err error) {
	n := 0
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, "", "", err
		}
		if n += len(line); n > rawMaxHeader {
			return 0, "", "", errors.New("bench: response header too large")
		}
		line = bytes.TrimRight(line, "\r\n")
		if first {
			f := bytes.Fields(line)
			if len(f) < 2 {
				return 0, "", "", fmt.Errorf("bench: bad status line %q", line)
			}
			status, _ = strconv.Atoi(string(f[1]))
			continue
		}
		if len(line) == 0 {
			return status, accept, protocol, nil
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok {
			switch {
			case bytes.EqualFold(k, []byte("Sec-WebSocket-Accept")):
				accept = string(bytes.TrimSpace(v))
			case bytes.EqualFold(k, []byte("Sec-WebSocket-Protocol")):
				protocol = string(bytes.TrimSpace(v))
			}
		}
	}
}

// closeWS sends a masked close frame with 1000, reads frames until the
// relay's close frame and closes the socket.
func closeWS(conn net.Conn, br *bufio.Reader) error {
	defer conn.Close()
	mask := [4]byte{0x5a, 0xa5, 0x3c, 0xc3}
	frame := []byte{0x88, 0x80 | 2, mask[0], mask[1], mask[2], mask[3], 0x03 ^ mask[0], 0xe8 ^ mask[1]}
	if _, err := conn.Write(frame); err != nil {
		return err
	}
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return fmt.Errorf("bench: waiting for the close frame: %w", err)
		}
		n := int64(h[1] & 0x7f)
		switch n {
		case 126:
			var e [2]byte
			if _, err := io.ReadFull(br, e[:]); err != nil {
				return err
			}
			n = int64(e[0])<<8 | int64(e[1])
		case 127:
			var e [8]byte
			if _, err := io.ReadFull(br, e[:]); err != nil {
				return err
			}
			n = 0
			for _, b := range e {
				n = n<<8 | int64(b)
			}
		}
		if h[1]&0x80 != 0 {
			n += 4 // a server must not mask, but skip a mask anyway
		}
		if _, err := br.Discard(int(n)); err != nil {
			return err
		}
		if h[0]&0x0f == 0x8 {
			return nil
		}
	}
}

// cycle runs one access + code exchange + close and returns the time of each
// stage.
func (c *rawClient) cycle(ctx context.Context) (access, exchange, cls time.Duration, err error) {
	t0 := time.Now()
	path, t1 := c.oneStepPath, t0 // one step: no access request
	if !c.oneStep {
		var err error
		if path, err = c.access(ctx); err != nil {
			return 0, 0, 0, err
		}
		t1 = time.Now()
	}
	conn, br, err := c.exchange(ctx, path)
	if err != nil {
		return t1.Sub(t0), 0, 0, err
	}
	t2 := time.Now()
	if err := closeWS(conn, br); err != nil {
		return t1.Sub(t0), t2.Sub(t1), 0, err
	}
	return t1.Sub(t0), t2.Sub(t1), time.Since(t2), nil
}
