// Package sseconn adapts a server-sent event stream (text/event-stream, the
// body of a GET answered 200) to relay.Conn, so that a read-only client — a
// browser's EventSource, curl — can follow a topic without a websocket.
// The stream is a relay reader like any other: the relay's bounded queue,
// slow-consumer policy, pings and closes apply to it unchanged.
//
// Each relay message is one event (docs/protocol.md "Server-sent events"):
// a text message as "data:" lines, one per line of the message (CR LF, CR
// and LF all end a line, as the event-stream format has it, so a client
// sees every line break as LF); a binary message as "event: binary" and
// its standard base64 in one "data:" line. A ping is the comment ": ping";
// Close writes "event: close" with the code and reason as JSON, then ends
// the stream. Events carry no id: nothing is replayed.
//
// The stream is not hijacked: net/http still owns the connection, and its
// request deadlines (http.Server ReadTimeout, WriteTimeout) would cut it.
// New clears the read deadline, and every write sets its own write
// deadline (http.ResponseController). So the ResponseWriter must support
// deadlines and Flush: net/http's own, or a wrapper with Unwrap; without
// them every write fails (http.ErrNotSupported) and the relay closes the
// stream, rather than leave its writes unbounded.
package sseconn

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// ContentType is the media type of the stream, and what a request's Accept
// header names to ask for it.
const ContentType = "text/event-stream"

// handshakeWriteTimeout bounds writing the response headers; closeWriteTimeout
// the final close event.
const (
	handshakeWriteTimeout = 10 * time.Second
	closeWriteTimeout     = 5 * time.Second
)

// States of a Conn.
const (
	stateOpen    int32 = iota
	stateClosing       // Close is writing the close event
	stateClosed        // the close event was written (or could not be)
	stateAborted       // Abort ended the stream
)

// ErrClosed is returned by writes after Close or Abort.
var ErrClosed = errors.New("sseconn: stream closed")

// Conn is a relay.Conn over an http.ResponseWriter. It implements
// relay.Handshaker: the response headers go out once the relay has
// registered the reader, so nothing written to the topic after the client
// sees the 200 is missed. The handler that made it must not return before
// the relay is done with it (relay.Server.Accept returns), and must end the
// response abruptly if Aborted (panic(http.ErrAbortHandler)).
type Conn struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	ctx   context.Context // the request's: done when the client goes away
	state atomic.Int32
	done  chan struct{} // closed by Close or Abort
	once  sync.Once

	mu  sync.Mutex // serialises writes to w; guards buf
	buf []byte     // the events of one write, reused
}

// New returns a stream over w for r. It clears the read deadline the
// server set for r: the client sends nothing more, and net/http's
// background read of the connection, which notices the client going away,
// would otherwise time out and cancel the request.
func New(w http.ResponseWriter, r *http.Request) *Conn {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	return &Conn{w: w, rc: rc, ctx: r.Context(), done: make(chan struct{})}
}

// Handshake implements relay.Handshaker: it writes the 200 and the headers
// of an event stream, and flushes them.
func (c *Conn) Handshake() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != stateOpen {
		return ErrClosed
	}
	h := c.w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events through at once
	c.w.WriteHeader(http.StatusOK)
	return c.flush(time.Now().Add(handshakeWriteTimeout))
}

// ReadMessage implements relay.Conn. The client sends nothing on an event
// stream: it blocks until the client goes away (the request's context is
// done), which it reports as a normal close, or until Close or Abort.
func (c *Conn) ReadMessage() (relay.MessageType, []byte, error) {
	select {
	case <-c.ctx.Done():
		return 0, nil, &relay.CloseError{Code: relay.CloseNormal, Reason: "client went away"}
	case <-c.done:
		return 0, nil, ErrClosed
	}
}

// WriteMessages implements relay.Conn: the batch as events, in one write
// and one flush, given up at deadline.
func (c *Conn) WriteMessages(msgs []relay.Message, deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != stateOpen {
		return ErrClosed
	}
	b := c.buf[:0]
	for i := range msgs {
		b = AppendEvent(b, msgs[i])
	}
	c.buf = b
	return c.write(b, deadline)
}

// pingComment is a heartbeat: a comment, which clients ignore, that keeps
// proxies from timing the stream out.
var pingComment = []byte(": ping\n\n")

// Ping implements relay.Conn: it writes a heartbeat comment. The client
// does not answer; a write that goes through before deadline is taken for
// a live client (a gone one makes it fail, or ends the request).
func (c *Conn) Ping(deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != stateOpen {
		return ErrClosed
	}
	return c.write(pingComment, deadline)
}

// Close implements relay.Conn: it writes the close event, flushes it and
// ends the stream (ReadMessage returns). Later calls do nothing.
func (c *Conn) Close(code relay.CloseCode, reason string) error {
	if !c.state.CompareAndSwap(stateOpen, stateClosing) {
		return nil
	}
	defer c.end()
	c.mu.Lock()
	defer c.mu.Unlock()
	data, _ := json.Marshal(struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{int(code), reason})
	b := append(c.buf[:0], "event: close\ndata: "...)
	b = append(append(b, data...), "\n\n"...)
	err := c.write(b, time.Now().Add(closeWriteTimeout))
	c.state.CompareAndSwap(stateClosing, stateClosed)
	return err
}

// Abort implements relay.Conn: it ends the stream at once, interrupting a
// write in progress (its deadline moves to now). The handler then breaks
// off the response (Aborted). After a completed Close it does nothing.
func (c *Conn) Abort() {
	if c.state.CompareAndSwap(stateOpen, stateAborted) || c.state.CompareAndSwap(stateClosing, stateAborted) {
		_ = c.rc.SetWriteDeadline(time.Now())
		c.end()
	}
}

// Aborted reports whether Abort ended the stream: the handler must not end
// the response as if it were complete.
func (c *Conn) Aborted() bool { return c.state.Load() == stateAborted }

// Done is closed once Close or Abort has ended the stream.
func (c *Conn) Done() <-chan struct{} { return c.done }

func (c *Conn) end() { c.once.Do(func() { close(c.done) }) }

// write writes b and flushes it, both bounded by deadline; c.mu is held.
func (c *Conn) write(b []byte, deadline time.Time) error {
	if err := c.rc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	return c.rc.Flush()
}

// flush flushes what is buffered, bounded by deadline; c.mu is held.
func (c *Conn) flush(deadline time.Time) error {
	if err := c.rc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	return c.rc.Flush()
}

// AppendEvent appends m to b as one event: a text message as one "data:"
// line per line (CR LF, CR or LF end one), a binary one as "event: binary"
// and its standard base64.
func AppendEvent(b []byte, m relay.Message) []byte {
	if m.Type == relay.Binary {
		b = append(b, "event: binary\ndata: "...)
		b = base64.StdEncoding.AppendEncode(b, m.Data)
		return append(b, "\n\n"...)
	}
	d := m.Data
	for {
		b = append(b, "data: "...)
		i := indexLineEnd(d)
		if i < 0 {
			b = append(b, d...)
			break
		}
		b = append(append(b, d[:i]...), '\n')
		if d[i] == '\r' && i+1 < len(d) && d[i+1] == '\n' {
			i++
		}
		d = d[i+1:]
	}
	return append(b, "\n\n"...)
}

// indexLineEnd returns the index of the first CR or LF in d, or -1. Two
// IndexByte scans (vectorised) instead of a byte loop: every reader's
// every text message is scanned (5 % of the server's CPU in bench publish's
// event-stream fan-out).
func indexLineEnd(d []byte) int {
	lf := bytes.IndexByte(d, '\n')
	before := d
	if lf >= 0 {
		before = d[:lf]
	}
	if cr := bytes.IndexByte(before, '\r'); cr >= 0 {
		return cr
	}
	return lf
}
