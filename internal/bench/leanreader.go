package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// A reader connection that speaks just what a subscriber needs of RFC 6455,
// written for the fan-out scenarios' readers: the opening handshake by hand,
// then frames parsed straight out of a baselineReadBuffer-sized bufio.Reader
// into the reader's own buffer, pings answered, and the closing handshake.
// It exists so that the relay is measured the way tcp-baseline measures the
// plain-TCP hub: with the simplest efficient reader. pkg/client (the
// websocket library) takes a lock, a select and a context check per message
// and per frame, which at a million messages a second costs more CPU than
// the relay itself on a machine where client and server share the cores
// (see docs/BENCHMARKS.md); --reader-client pkg measures with it instead.
//
// What it leaves out, being a benchmark reader of a relay it trusts: UTF-8
// checks of text messages and close reasons, checks of the 101 response's
// Upgrade and Connection headers, a random handshake key and masking key
// (both fixed), and 1009 for a message over its limit (it closes with 1002).
// It never sends data.

// Reader clients for FanoutOptions.ReaderClient.
const (
	ReaderClientLean = "lean"
	ReaderClientPkg  = "pkg"
)

// leanMaxMessage bounds a message; the relay's own default limit is lower.
const leanMaxMessage = 64 << 20

// leanConn is a reader's websocket connection. ReadMessage is called by one
// goroutine; Close and CloseNow may be called by any.
type leanConn struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte // the current message, reused

	rmu       sync.Mutex // held while reading frames: by ReadMessage, or by Close when no reader is
	wmu       sync.Mutex // the control frames written by the reader and by Close
	closeSent bool
	closed    chan struct{} // closed when the relay's close frame was read
	closeOnce sync.Once
}

var _ msgConn = (*leanConn)(nil)

// dialLean opens the websocket at uri, as returned by the access endpoint,
// with header (e.g. Origin) on the handshake. size is the expected message
// size, for the first buffer.
func dialLean(ctx context.Context, uri string, header http.Header, size int) (*leanConn, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "ws" || u.Host == "" {
		return nil, fmt.Errorf("bench: lean reader: uri %q: want ws://host:port/…", redactedURI(uri))
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled ctx (another dial failed) ends the handshake at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := make([]byte, 0, 512)
	req = append(req, "GET "...)
	req = append(req, u.RequestURI()...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, u.Host...)
	req = append(req, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "+rawWSKey+"\r\nSec-WebSocket-Version: 13\r\n"...)
	for k, vs := range header {
		for _, v := range vs {
			req = append(req, k...)
			req = append(req, ": "...)
			req = append(req, v...)
			req = append(req, "\r\n"...)
		}
	}
	req = append(req, "\r\n"...)
	if _, err := conn.Write(req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, baselineReadBuffer)
	status, accept, _, err := readUpgrade(br)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("bench: lean reader: handshake: %w", err)
	}
	if status != http.StatusSwitchingProtocols || accept != rawWSAccept {
		conn.Close()
		return nil, fmt.Errorf("bench: lean reader: websocket refused: HTTP %d", status)
	}
	_ = conn.SetDeadline(time.Time{})
	return &leanConn{conn: conn, br: br, buf: make([]byte, 0, size+64), closed: make(chan struct{})}, nil
}

// redactedURI drops the query (the one-time code) from uri.
func redactedURI(uri string) string {
	if u, err := url.Parse(uri); err == nil {
		u.RawQuery = ""
		return u.String()
	}
	return "(unparsable)"
}

// ReadMessage returns the next data message (text or binary, reassembled
// from its fragments). It answers pings; the relay's close frame is answered
// and returned as a *client.CloseError. It does not allocate once its buffer
// has grown to the message size.
func (c *leanConn) ReadMessage() ([]byte, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.buf = c.buf[:0]
	fragmented := false
	for {
		fin, op, n, err := c.readHeader()
		if err != nil {
			return nil, err
		}
		if op >= 0x8 { // control frame
			if !fin || n > 125 {
				return nil, c.fail("bad control frame")
			}
			var p [125]byte
			if _, err := io.ReadFull(c.br, p[:n]); err != nil {
				return nil, err
			}
			switch op {
			case 0x9: // ping
				if err := c.writeControl(0xA, p[:n]); err != nil {
					return nil, err
				}
			case 0xA: // pong
			case 0x8: // close
				return nil, c.closeReceived(p[:n])
			default:
				return nil, c.fail(fmt.Sprintf("unknown opcode %#x", op))
			}
			continue
		}
		switch {
		case op == 0x0 && !fragmented:
			return nil, c.fail("continuation without a first fragment")
		case (op == 0x1 || op == 0x2) && fragmented:
			return nil, c.fail("new message inside a fragmented one")
		case op > 0x2:
			return nil, c.fail(fmt.Sprintf("unknown opcode %#x", op))
		}
		if n > leanMaxMessage-uint64(len(c.buf)) {
			return nil, c.fail("message too large")
		}
		start := len(c.buf)
		end := start + int(n)
		if end > cap(c.buf) {
			c.buf = append(c.buf[:cap(c.buf)], make([]byte, end-cap(c.buf))...)
		}
		c.buf = c.buf[:end]
		if _, err := io.ReadFull(c.br, c.buf[start:end]); err != nil {
			return nil, err
		}
		if fin {
			return c.buf, nil
		}
		fragmented = true
	}
}

// readHeader reads a frame header of a server (unmasked).
func (c *leanConn) readHeader() (fin bool, op byte, n uint64, err error) {
	h, err := c.br.Peek(2)
	if err != nil {
		return false, 0, 0, err
	}
	b0, b1 := h[0], h[1]
	if b0&0x70 != 0 {
		return false, 0, 0, c.fail("reserved bits set")
	}
	if b1&0x80 != 0 {
		return false, 0, 0, c.fail("masked frame from the server")
	}
	fin, op, n = b0&0x80 != 0, b0&0x0f, uint64(b1&0x7f)
	ext := 0
	switch n {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	if ext > 0 {
		if h, err = c.br.Peek(2 + ext); err != nil {
			return false, 0, 0, err
		}
		n = 0
		for _, b := range h[2 : 2+ext] {
			n = n<<8 | uint64(b)
		}
		if n>>63 != 0 {
			return false, 0, 0, c.fail("64-bit length with the most significant bit set")
		}
	}
	_, _ = c.br.Discard(2 + ext)
	return fin, op, n, nil
}

// fail sends a 1002 close and returns the protocol error.
func (c *leanConn) fail(why string) error {
	_ = c.writeControl(0x8, []byte{0x03, 0xea}) // 1002
	return fmt.Errorf("bench: lean reader: protocol error: %s", why)
}

// closeReceived answers the relay's close frame (unless Close sent one
// already) and returns its code and reason.
func (c *leanConn) closeReceived(p []byte) error {
	ce := &client.CloseError{Code: 1005} // no status
	switch {
	case len(p) == 1:
		return c.fail("close frame with a 1-byte body")
	case len(p) >= 2:
		ce.Code, ce.Reason = wire.CloseCode(p[0])<<8|wire.CloseCode(p[1]), string(p[2:])
		if !validCloseCode(ce.Code) {
			return c.fail(fmt.Sprintf("close code %d may not be sent", ce.Code))
		}
		_ = c.writeControl(0x8, p[:2])
	default:
		_ = c.writeControl(0x8, nil)
	}
	c.closeOnce.Do(func() { close(c.closed) })
	return ce
}

// validCloseCode reports whether code may appear in a close frame (RFC 6455
// section 7.4: 1000-1003, 1007-1011 and the registered and private ranges
// 3000-4999; 1004-1006 and 1015 are reserved or never sent).
func validCloseCode(code wire.CloseCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// writeControl writes one masked control frame; once a close frame has
// been sent nothing more is.
func (c *leanConn) writeControl(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return nil
	}
	if op == 0x8 {
		c.closeSent = true
	}
	// A client must mask; this fixed key does for a benchmark (the mask
	// protects proxies from crafted plaintext, not the payload).
	mask := [4]byte{0x5a, 0xa5, 0x3c, 0xc3}
	var frame [2 + 4 + 125]byte
	frame[0], frame[1] = 0x80|op, 0x80|byte(len(payload))
	copy(frame[2:6], mask[:])
	for i, b := range payload {
		frame[6+i] = b ^ mask[i%4]
	}
	_, err := c.conn.Write(frame[:6+len(payload)])
	return err
}

// Close sends a 1000 close frame and waits, up to closeTimeout, for the
// relay's answer: read by the reader goroutine if one is in ReadMessage, or
// else by Close itself. Then it closes the socket.
func (c *leanConn) Close() error {
	defer c.conn.Close()
	if err := c.writeControl(0x8, []byte{0x03, 0xe8}); err != nil {
		return err
	}
	deadline := time.Now().Add(closeTimeout)
	for {
		select {
		case <-c.closed:
			return nil
		default:
		}
		if c.rmu.TryLock() {
			defer c.rmu.Unlock()
			_ = c.conn.SetReadDeadline(deadline)
			for {
				fin, op, n, err := c.readHeader()
				if err != nil {
					return fmt.Errorf("bench: lean reader: waiting for the close frame: %w", err)
				}
				if n > leanMaxMessage {
					return errors.New("bench: lean reader: frame too large while waiting for the close frame")
				}
				if _, err := c.br.Discard(int(n)); err != nil {
					return err
				}
				if op == 0x8 && fin {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return errors.New("bench: lean reader: no close frame from the relay")
		}
		// A reader is in ReadMessage: it will see the close frame, or return
		// a message and leave the reading to this loop.
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-c.closed:
		case <-t.C:
		}
		t.Stop()
	}
}

// CloseNow closes the socket.
func (c *leanConn) CloseNow() error { return c.conn.Close() }

// WriteMessage is not supported: lean connections only read.
func (c *leanConn) WriteMessage(context.Context, []byte) error {
	return errors.New("bench: lean reader: connections read only")
}
