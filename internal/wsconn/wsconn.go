// Package wsconn adapts a websocket connection (github.com/coder/websocket) to
// relay.Conn.
//
// Writes are batched: the relay hands over every queued message at once, and
// the adapter "corks" the socket so that the frames of a batch reach the
// kernel in as few write calls as possible (one for a batch up to corkLimit
// bytes) instead of one per message. Reads produce exactly one allocation per
// message: the payload slice handed to the relay.
package wsconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"switchboard/internal/relay"
)

// corkLimit is the most bytes held back while corked before a write.
const corkLimit = 64 << 10

// Options configure Upgrade.
type Options struct {
	// MaxMessageBytes is the read limit; a larger message closes the
	// connection with 1009. Must be positive.
	MaxMessageBytes int
	// Subprotocols the server may select, in order of preference.
	Subprotocols []string
}

// Conn is a server-side websocket connection implementing relay.Conn.
type Conn struct {
	ws *websocket.Conn
	nc *corkConn
}

var _ relay.Conn = (*Conn)(nil)

// Upgrade completes the websocket handshake on w and r. The caller must have
// authorised the request and checked its Origin already: Upgrade does not.
// On failure Upgrade has written an HTTP error response.
func Upgrade(w http.ResponseWriter, r *http.Request, opts Options) (*Conn, error) {
	hw := &hijackCapture{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // Origin is checked by the caller, with its own allowlist
		CompressionMode:    websocket.CompressionDisabled,
		Subprotocols:       opts.Subprotocols,
	})
	if err != nil {
		return nil, fmt.Errorf("wsconn: %w", err)
	}
	ws.SetReadLimit(int64(opts.MaxMessageBytes))
	return &Conn{ws: ws, nc: hw.nc}, nil
}

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

// WriteMessages implements relay.Conn: all messages are written while the
// socket is corked, then flushed with as few writes as possible.
func (c *Conn) WriteMessages(msgs []relay.Message, deadline time.Time) error {
	if err := c.nc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	c.nc.cork()
	for i := range msgs {
		// A context without Done: the deadline is on the socket, so the
		// library sets up no per-message timer.
		if err := c.ws.Write(context.Background(), websocket.MessageType(msgs[i].Type), msgs[i].Data); err != nil {
			c.nc.uncork()
			return err
		}
	}
	return c.nc.uncork()
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
	_ = c.nc.Conn.Close()
	_ = c.ws.CloseNow()
}

// hijackCapture interposes a corkConn between the websocket library and the
// hijacked connection.
type hijackCapture struct {
	http.ResponseWriter
	nc *corkConn
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Clear any deadline the HTTP server set for the request: from here on
	// the relay sets its own per write.
	_ = nc.SetDeadline(time.Time{})
	h.nc = &corkConn{Conn: nc}
	return h.nc, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(h.nc, 4096)), nil
}

func (h *hijackCapture) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// corkConn holds back writes while corked and sends them in one write when
// uncorked or when corkLimit bytes are pending.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool    // guarded by mu
	buf    *[]byte // guarded by mu; pending bytes while corked
}

var corkBufPool = sync.Pool{New: func() any { b := make([]byte, 0, corkLimit); return &b }}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *corkConn) flushLocked() error {
	if c.buf == nil {
		return nil
	}
	b := *c.buf
	_, err := c.Conn.Write(b)
	*c.buf = b[:0]
	corkBufPool.Put(c.buf)
	c.buf = nil
	return err
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	if c.buf != nil && len(*c.buf)+len(p) > corkLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= corkLimit {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = corkBufPool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}
