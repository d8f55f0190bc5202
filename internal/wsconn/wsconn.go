// Package wsconn adapts a websocket connection (github.com/coder/websocket) to
// relay.Conn.
//
// The library does the handshake, reads, and control frames (ping, pong,
// close). Data frames, the hot path, are written here: the relay hands over
// every queued message at once, and the adapter frames them (a server's
// frames are unmasked, so a frame is a 2-10 byte header and the shared
// payload, never copied) and sends the whole batch with one vectored write
// (writev) on plain TCP, or in 64 KiB chunks on TLS. Both writers share one
// lock on the socket, held per complete frame or batch, so frames never
// interleave. Reads produce exactly one allocation per message: the payload
// slice handed to the relay.
package wsconn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// Options configure Upgrade.
type Options struct {
	// MaxMessageBytes is the read limit; a larger message closes the
	// connection with 1009. Must be positive.
	MaxMessageBytes int
	// Subprotocols the server may select, in order of preference.
	Subprotocols []string
	// HoldHandshake keeps the handshake's 101 response back until
	// Handshake is called, so that the caller can first make the
	// connection ready to receive (relay.Accept registers it): a peer that
	// has its 101 misses nothing sent after it. Without it, the 101 is
	// sent by Upgrade.
	HoldHandshake bool
}

// Conn is a server-side websocket connection implementing relay.Conn.
type Conn struct {
	ws *websocket.Conn
	nc *lockedConn
	// held is the 101 response not sent yet (HoldHandshake), or nil.
	held      []byte
	handshake sync.Once
	hsErr     error
}

var _ relay.Conn = (*Conn)(nil)

// Upgrade completes the websocket handshake on w and r. The caller must have
// authorised the request and checked its Origin already: Upgrade does not.
// On failure Upgrade has written an HTTP error response.
func Upgrade(w http.ResponseWriter, r *http.Request, opts Options) (*Conn, error) {
	hw := &hijackCapture{ResponseWriter: w, hold: opts.HoldHandshake}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // Origin is checked by the caller, with its own allowlist
		CompressionMode:    websocket.CompressionDisabled,
		Subprotocols:       opts.Subprotocols,
	})
	if err != nil {
		return nil, fmt.Errorf("wsconn: %w", err)
	}
	ws.SetReadLimit(int64(opts.MaxMessageBytes))
	return &Conn{ws: ws, nc: hw.nc, held: hw.held}, nil
}

// Handshake sends the 101 response that Upgrade held back
// (Options.HoldHandshake); it does nothing otherwise, or when called again.
// It implements relay.Handshaker.
func (c *Conn) Handshake() error {
	c.handshake.Do(func() {
		if c.held == nil {
			return
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(handshakeWriteTimeout))
		_, c.hsErr = c.nc.Write(c.held)
		_ = c.nc.SetWriteDeadline(time.Time{})
		c.held = nil
	})
	return c.hsErr
}

// handshakeWriteTimeout bounds writing a held 101 response.
const handshakeWriteTimeout = 10 * time.Second

// Subprotocol returns the negotiated subprotocol, if any.
func (c *Conn) Subprotocol() string { return c.ws.Subprotocol() }

// readBufPool holds scratch buffers for assembling incoming messages.
var readBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// ReadMessage implements relay.Conn.
func (c *Conn) ReadMessage() (relay.MessageType, []byte, error) {
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		return 0, nil, mapError(err)
	}
	bp := readBufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = buf[:0]
			readBufPool.Put(bp)
			return 0, nil, mapError(err)
		}
	}
	data := make([]byte, len(buf))
	copy(data, buf)
	if cap(buf) <= 1<<20 {
		*bp = buf[:0]
		readBufPool.Put(bp)
	}
	return relay.MessageType(typ), data, nil
}

// mapError turns websocket errors into relay close errors where the close
// code is known.
func mapError(err error) error {
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return &relay.CloseError{Code: relay.CloseTooBig, Reason: "message too big"}
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return &relay.CloseError{Code: relay.CloseCode(ce.Code), Reason: ce.Reason}
	}
	return err
}

// WriteMessages implements relay.Conn: the batch goes out in one vectored
// write (plain TCP) or in as few 64 KiB writes as possible (TLS).
func (c *Conn) WriteMessages(msgs []relay.Message, deadline time.Time) error {
	b := batchPool.Get().(*batch)
	defer b.release()
	if cap(b.headers) < len(msgs)*maxHeaderLen {
		b.headers = make([]byte, 0, len(msgs)*maxHeaderLen)
	}
	for i := range msgs {
		start := len(b.headers)
		b.headers = appendHeader(b.headers, msgs[i].Type, len(msgs[i].Data))
		b.iov = append(b.iov, b.headers[start:], msgs[i].Data)
	}
	return c.nc.writeBatch(b, deadline)
}

// maxHeaderLen is the longest header of an unmasked frame.
const maxHeaderLen = 10

// appendHeader appends the header of a final, unmasked data frame (RFC 6455
// §5.2).
func appendHeader(b []byte, typ relay.MessageType, n int) []byte {
	b = append(b, 0x80|byte(typ)) // FIN and the opcode (text 1, binary 2)
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xffff:
		return append(b, 126, byte(n>>8), byte(n))
	}
	return append(b, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// batch is the scratch space of one WriteMessages call, pooled so that an
// idle connection holds none.
type batch struct {
	headers []byte
	iov     net.Buffers
	all     net.Buffers // iov before WriteTo consumed it
	chunk   net.Buffers // the part being written (a field: no allocation for WriteTo)
	flat    []byte      // for connections without vectored writes
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

// maxPooledIOV bounds the scratch kept in the pool after a large batch.
const maxPooledIOV = 4096

func (b *batch) release() {
	clear(b.all) // drop references to payloads
	clear(b.iov)
	if cap(b.all) > maxPooledIOV {
		return
	}
	b.headers, b.iov, b.all, b.chunk, b.flat = b.headers[:0], b.all[:0], nil, nil, b.flat[:0]
	batchPool.Put(b)
}

// Ping implements relay.Conn.
func (c *Conn) Ping(deadline time.Time) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return c.ws.Ping(ctx)
}

// Close implements relay.Conn.
func (c *Conn) Close(code relay.CloseCode, reason string) error {
	// A stalled peer may never read the close frame: bound the write.
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.Close(websocket.StatusCode(code), reason)
}

// Abort implements relay.Conn.
func (c *Conn) Abort() {
	// Closing the socket first unblocks a write stuck on a stalled peer,
	// which CloseNow would otherwise wait for.
	_ = c.nc.Close()
	_ = c.ws.CloseNow()
}

// hijackCapture interposes a lockedConn between the websocket library and
// the hijacked connection.
type hijackCapture struct {
	http.ResponseWriter
	nc *lockedConn
	// hold keeps the 101 back: WriteHeader records it, Hijack leaves it
	// unwritten, and held is the response, written by Conn.Handshake.
	hold     bool
	switched bool
	held     []byte
}

// WriteHeader records a 101 to be held; any other status goes through.
func (h *hijackCapture) WriteHeader(code int) {
	if h.hold && code == http.StatusSwitchingProtocols {
		h.switched = true
		return
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h.switched {
		// The response net/http would have written at the hijack: the
		// status line and the headers set so far.
		var b bytes.Buffer
		b.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
		if err := h.Header().Write(&b); err != nil {
			return nil, nil, err
		}
		b.WriteString("\r\n")
		h.held = b.Bytes()
	}
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// A connection the HTTP server wrapped for its own answers (the
	// server's JSON rewriting of net/http's errors, its count of open
	// connections) offers the one beneath: the relay reads and writes the
	// socket itself, with writev, and closes through the wrapper.
	var closer io.Closer = nc
	if u, ok := nc.(interface{ Unwrap() net.Conn }); ok {
		nc = u.Unwrap()
	}
	// Clear any deadline the HTTP server set for the request: from here on
	// the relay sets its own per write.
	_ = nc.SetDeadline(time.Time{})
	h.nc = newLockedConn(nc)
	h.nc.closer = closer
	// The HTTP server's 4 KiB read buffer would stay with the connection
	// for its life. Unless it holds bytes the client sent after the
	// handshake, a smaller one replaces it: frames at least as long as the
	// buffer are read straight into the caller's slice anyway.
	br := brw.Reader
	if br.Buffered() == 0 {
		br = bufio.NewReaderSize(h.nc, readBufferSize)
	}
	// The library's own frames (control frames) are small and flushed whole
	// into the lockedConn, so a small buffer suffices.
	return h.nc, bufio.NewReadWriter(br, bufio.NewWriterSize(h.nc, 512)), nil
}

// readBufferSize is the size of a connection's read buffer.
const readBufferSize = 2 << 10

func (h *hijackCapture) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// lockedConn serialises writes to the socket: the library's (each a whole
// control frame, flushed from its buffer in one Write) and the adapter's
// batches.
type lockedConn struct {
	net.Conn
	closer   io.Closer // closes Conn (perhaps through the server's wrapper)
	vectored bool      // the socket supports writev
	mu       sync.Mutex
	broken   error // guarded by mu; set when a write failed part-way
}

func newLockedConn(nc net.Conn) *lockedConn {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		return &lockedConn{Conn: nc, vectored: true}
	}
	return &lockedConn{Conn: nc}
}

// Close closes the connection (through the wrapper it came in, if any).
func (c *lockedConn) Close() error {
	if c.closer != nil {
		return c.closer.Close()
	}
	return c.Conn.Close()
}

func (c *lockedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return 0, c.broken
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.broken = err
	}
	return n, err
}

// flatChunk is the most bytes gathered into one write on sockets without
// vectored writes (TLS: one write makes at most a few TLS records).
const flatChunk = 64 << 10

// chunkBytes bounds how much of a batch is written under one hold of the
// socket lock: the library's control frames (pings, pongs, close) wait for
// one chunk at most, never for a whole 8 MiB queue, and each chunk gets the
// write timeout afresh, so the timeout bounds progress, not the batch.
const chunkBytes = 256 << 10

// writeBatch writes the frames in b.iov (header and payload pairs) in
// chunks of whole frames. After an error the socket is marked broken: no
// frame may follow a half-written one.
func (c *lockedConn) writeBatch(b *batch, deadline time.Time) error {
	timeout := time.Until(deadline)
	iov := b.iov
	b.all = iov
	for start := 0; start < len(iov); {
		end, n := start, 0
		for end < len(iov) && (end == start || n+len(iov[end])+len(iov[end+1]) <= chunkBytes) {
			n += len(iov[end]) + len(iov[end+1])
			end += 2
		}
		b.chunk = iov[start:end]
		if err := c.writeChunk(b, timeout); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// writeChunk writes b.chunk (consuming it).
func (c *lockedConn) writeChunk(b *batch, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	if err := c.Conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		c.broken = err
		return err
	}
	var err error
	if c.vectored {
		_, err = b.chunk.WriteTo(c.Conn) // writev
	} else {
		err = c.writeFlat(b, b.chunk)
	}
	if err == nil {
		// The library bounds its own writes with contexts, not deadlines:
		// a deadline left behind would fail its next ping or pong.
		err = c.Conn.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		c.broken = err
	}
	return err
}

// writeFlat gathers the chunk into writes of up to flatChunk bytes.
func (c *lockedConn) writeFlat(b *batch, chunk net.Buffers) error {
	b.flat = b.flat[:0]
	for _, p := range chunk {
		if len(b.flat)+len(p) > flatChunk && len(b.flat) > 0 {
			if _, err := c.Conn.Write(b.flat); err != nil {
				return err
			}
			b.flat = b.flat[:0]
		}
		if len(p) >= flatChunk {
			if _, err := c.Conn.Write(p); err != nil {
				return err
			}
			continue
		}
		b.flat = append(b.flat, p...)
	}
	if len(b.flat) > 0 {
		_, err := c.Conn.Write(b.flat)
		return err
	}
	return nil
}
