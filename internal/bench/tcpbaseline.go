package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TCP baseline: the fan-out of Fanout with everything but the transport
// taken away. An in-process hub on a loopback listener reads
// length-prefixed messages from one writer connection and queues each for
// every reader connection; one goroutine per reader writes everything queued
// in one writev. No relay logic, no websocket framing, no authentication:
// what is left is the kernel's loopback TCP, the Go runtime and the
// bench's own clients, which is as fast as this machine can fan out.
//
// Wire format, both directions: a 4-byte little-endian payload length, then
// the payload (the same payload as Fanout's: send time, sequence, filler).
// A connection's first byte says what it is, roleWriter or roleReader, and
// the next four (little endian) the number of its topic: a writer's messages
// go to the readers of its topic.

// Defaults of TCPBaselineOptions.
const (
	// DefaultBaselineQueueBytes bounds each reader's queue in the hub, like
	// the relay's default send queue (relay.DefaultSendQueueBytes, 2 MiB;
	// this package may not import the relay).
	DefaultBaselineQueueBytes = 2 << 20
	// BaselineMessageOverhead is what each queued message counts for in
	// addition to its payload, as in the relay.
	BaselineMessageOverhead = 32
	// baselineReadBuffer is the size of the readers' bufio.Reader and of
	// the hub's reader of the writer connection.
	baselineReadBuffer = 64 << 10
	// baselineMaxSize is the largest payload the hub accepts.
	baselineMaxSize = 64 << 20
	// frameHeader is the length prefix.
	frameHeader = 4

	roleWriter = 'W'
	roleReader = 'R'
)

// TCPBaselineOptions configure TCPBaseline. Zero values mean the defaults
// of Fanout (readers, size, duration, warm-up, drain, connect timeout).
type TCPBaselineOptions struct {
	// Readers is the number of reader connections per topic (default 100).
	Readers int
	// Writers is the number of writer connections per topic (default 1).
	Writers int
	// Topics is the number of topics (default 1).
	Topics int
	// Size is the payload size in bytes (default 1024, at least MinSize).
	Size int
	// Rate is each writer's rate in messages per second; 0 means unpaced.
	Rate float64
	// Duration is the measured window (default 10 s).
	Duration time.Duration
	// Warmup precedes the measured window (default 1 s; negative: none).
	Warmup time.Duration
	// Drain bounds the wait for the last messages (default 3 s).
	Drain time.Duration
	// ConnectTimeout bounds connecting every connection (default 30 s).
	ConnectTimeout time.Duration
	// QueueBytes bounds each reader's queue in the hub, counting payload
	// plus BaselineMessageOverhead per message, including the batch being
	// written (default DefaultBaselineQueueBytes). When a message does not
	// fit, the oldest queued messages are dropped.
	QueueBytes int
}

// withDefaults returns the scenario's options with the defaults applied
// and the hub's queue bound.
func (o *TCPBaselineOptions) withDefaults() (FanoutOptions, int, error) {
	c, err := (&FanoutOptions{
		Readers: o.Readers, Writers: o.Writers, Topics: o.Topics, Size: o.Size, Rate: o.Rate, Duration: o.Duration,
		Warmup: o.Warmup, Drain: o.Drain, ConnectTimeout: o.ConnectTimeout,
	}).scenarioDefaults(baselineMaxSize)
	queue := o.QueueBytes
	if queue == 0 {
		queue = DefaultBaselineQueueBytes
	}
	switch {
	case err != nil:
		return c, queue, err
	case queue < c.Size+BaselineMessageOverhead:
		return c, queue, fmt.Errorf("bench: queue %d bytes: want at least size + %d = %d", queue, BaselineMessageOverhead, c.Size+BaselineMessageOverhead)
	}
	return c, queue, nil
}

// BaselineOptionsFrom returns the TCPBaseline options matching a Fanout
// run's: readers, writers, topics, size, rate, duration, warm-up, drain,
// connect timeout.
func BaselineOptionsFrom(o FanoutOptions) TCPBaselineOptions {
	return TCPBaselineOptions{
		Readers: o.Readers, Writers: o.Writers, Topics: o.Topics, Size: o.Size, Rate: o.Rate, Duration: o.Duration,
		Warmup: o.Warmup, Drain: o.Drain, ConnectTimeout: o.ConnectTimeout,
	}
}

// TCPBaselineResult is the outcome of TCPBaseline: the fields of
// FanoutResult (URL is the hub's tcp:// address, Topic is empty, there is no
// server process) and the hub's own counts.
type TCPBaselineResult struct {
	Scenario string `json:"scenario"` // "tcp-baseline"
	FanoutResult
	// QueueBytes is the bound of each reader's queue in the hub.
	QueueBytes int `json:"queue_bytes"`
	// HubDelivered is, summed over readers, the measured messages the hub
	// wrote to the readers' sockets.
	HubDelivered uint64 `json:"hub_delivered"`
	// HubDropped is, summed over readers, the measured messages the hub
	// dropped because a reader's queue was full (oldest first).
	HubDropped uint64 `json:"hub_dropped"`
	// CPUIncludesHub is always true: the hub runs in the bench process, so
	// ClientCPUSec is the CPU time of the hub and the clients together.
	CPUIncludesHub bool `json:"cpu_includes_hub"`
}

// TCPBaseline runs the fan-out of Fanout over plain loopback TCP through an
// in-process hub: it starts the hub, connects opts.Readers readers and one
// writer, waits until every reader receives the writer's probes, sends for
// Warmup+Duration, waits up to Drain for the readers to see the end of the
// stream, closes everything and returns the measurements. Reader failures
// are reported in the result.
func TCPBaseline(ctx context.Context, opts TCPBaselineOptions) (TCPBaselineResult, error) {
	o, queue, err := opts.withDefaults()
	if err != nil {
		return TCPBaselineResult{}, err
	}
	h, err := startHub(queue)
	if err != nil {
		return TCPBaselineResult{}, err
	}
	defer h.close()
	o.URL = "tcp://" + h.addr()
	fr, err := runScenario(ctx, o, &tcpTransport{addr: h.addr(), size: o.Size})
	res := TCPBaselineResult{Scenario: "tcp-baseline", FanoutResult: fr, QueueBytes: queue, CPUIncludesHub: true}
	if err != nil {
		return res, err
	}
	// Stop the hub so that its counts are final (runScenario closed every
	// connection).
	if err := h.close(); err != nil {
		return res, err
	}
	for _, s := range h.allSubs() {
		res.HubDelivered += s.delivered
		res.HubDropped += s.dropped
	}
	return res, nil
}

// tcpTransport connects to the hub.
type tcpTransport struct {
	addr string
	size int // payload size, for the writer's frame buffer
}

// parallelDials is 1: readers are dialled one after the other.
func (t *tcpTransport) parallelDials() int { return 1 }

func (t *tcpTransport) dialReader(ctx context.Context, topic int) (msgConn, error) {
	c, err := dialHub(ctx, t.addr, roleReader, topic)
	if err != nil {
		return nil, err
	}
	return &tcpConn{Conn: c, br: bufio.NewReaderSize(c, baselineReadBuffer)}, nil
}

func (t *tcpTransport) dialWriter(ctx context.Context, topic int) (msgConn, error) {
	c, err := dialHub(ctx, t.addr, roleWriter, topic)
	if err != nil {
		return nil, err
	}
	return &tcpConn{Conn: c, frame: make([]byte, 0, frameHeader+t.size)}, nil
}

// dialHub connects to the hub and announces the role and topic.
func dialHub(ctx context.Context, addr string, role byte, topic int) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(binary.LittleEndian.AppendUint32([]byte{role}, uint32(topic))); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// tcpConn is a client connection to the hub: length-prefixed messages.
// Only readers read (br is nil for the writer).
type tcpConn struct {
	net.Conn
	br      *bufio.Reader
	pending int    // bytes of the last message, still in br
	big     []byte // for payloads larger than br's buffer
	frame   []byte // the length prefix and payload being written
}

// WriteMessage writes the length prefix and p in one write. ctx is not
// used: a TCP write has no context.
func (c *tcpConn) WriteMessage(_ context.Context, p []byte) error {
	c.frame = binary.LittleEndian.AppendUint32(c.frame[:0], uint32(len(p)))
	c.frame = append(c.frame, p...)
	_, err := c.Write(c.frame)
	return err
}

// ReadMessage returns the next payload. One that fits in the bufio.Reader's
// buffer is returned in place and discarded at the next call.
func (c *tcpConn) ReadMessage() ([]byte, error) {
	if c.pending > 0 {
		_, _ = c.br.Discard(c.pending)
		c.pending = 0
	}
	hdr, err := c.br.Peek(frameHeader)
	if err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(hdr))
	if n > baselineMaxSize {
		return nil, fmt.Errorf("bench: message of %d bytes from the hub", n)
	}
	if frameHeader+n <= c.br.Size() {
		b, err := c.br.Peek(frameHeader + n)
		if err != nil {
			return nil, err
		}
		c.pending = frameHeader + n
		return b[frameHeader:], nil
	}
	_, _ = c.br.Discard(frameHeader)
	if cap(c.big) < n {
		c.big = make([]byte, n)
	}
	data := c.big[:n]
	if _, err := io.ReadFull(c.br, data); err != nil {
		return nil, err
	}
	return data, nil
}

func (c *tcpConn) CloseNow() error { return c.Close() }

// hub is the in-process fan-out: it accepts one writer and any number of
// readers on a loopback listener and copies every message from the writer
// to every reader's queue.
type hub struct {
	ln         net.Listener
	queueBytes int
	subs       atomic.Pointer[[][]*hubSub] // by topic; replaced, never modified
	done       chan struct{}               // closed by close
	wg         sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn // every accepted connection
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// hubSub is a reader connection seen from the hub.
type hubSub struct {
	conn net.Conn
	wake chan struct{} // capacity 1: something was queued

	mu       sync.Mutex
	q        [][]byte // frames (length prefix and payload), q[head:] queued
	head     int
	queued   int // bytes counted in q[head:]
	inflight int // bytes counted in the batch being written
	closing  bool

	// Measured messages; read after the hub has stopped.
	dropped   uint64 // written under mu by the dispatcher
	delivered uint64 // written by the write loop
}

func startHub(queueBytes int) (*hub, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: hub: %w", err)
	}
	h := &hub{ln: ln, queueBytes: queueBytes, done: make(chan struct{})}
	h.subs.Store(&[][]*hubSub{})
	h.wg.Add(1)
	go h.acceptLoop()
	return h, nil
}

func (h *hub) addr() string { return h.ln.Addr().String() }

func (h *hub) allSubs() []*hubSub {
	var all []*hubSub
	for _, subs := range *h.subs.Load() {
		all = append(all, subs...)
	}
	return all
}

// topicSubs returns the readers of topic.
func (h *hub) topicSubs(topic uint32) []*hubSub {
	if t := *h.subs.Load(); int(topic) < len(t) {
		return t[topic]
	}
	return nil
}

// close stops the hub: it closes the listener and every connection and
// waits (bounded by closeTimeout) for the hub's goroutines to end.
func (h *hub) close() error {
	h.closeOnce.Do(func() {
		_ = h.ln.Close()
		h.mu.Lock()
		h.closed = true
		for _, c := range h.conns {
			_ = c.Close()
		}
		h.mu.Unlock()
		close(h.done)
		stopped := make(chan struct{})
		go func() { h.wg.Wait(); close(stopped) }()
		t := time.NewTimer(closeTimeout)
		defer t.Stop()
		select {
		case <-stopped:
		case <-t.C:
			h.closeErr = fmt.Errorf("bench: hub did not stop within %v", closeTimeout)
		}
	})
	return h.closeErr
}

func (h *hub) acceptLoop() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			_ = c.Close()
			return
		}
		h.conns = append(h.conns, c)
		h.wg.Add(1)
		h.mu.Unlock()
		go h.serve(c)
	}
}

// maxHubTopics bounds the topic numbers the hub accepts.
const maxHubTopics = 1 << 20

// serve reads the role and topic and runs the connection.
func (h *hub) serve(c net.Conn) {
	defer h.wg.Done()
	br := bufio.NewReaderSize(c, baselineReadBuffer)
	var hello [1 + 4]byte
	if _, err := io.ReadFull(br, hello[:]); err != nil {
		_ = c.Close()
		return
	}
	topic := binary.LittleEndian.Uint32(hello[1:])
	if topic >= maxHubTopics {
		_ = c.Close()
		return
	}
	switch hello[0] {
	case roleReader:
		s := &hubSub{conn: c, wake: make(chan struct{}, 1)}
		h.mu.Lock()
		old := *h.subs.Load()
		topics := make([][]*hubSub, max(len(old), int(topic)+1))
		copy(topics, old)
		subs := make([]*hubSub, len(topics[topic]), len(topics[topic])+1)
		copy(subs, topics[topic])
		topics[topic] = append(subs, s)
		h.subs.Store(&topics)
		h.mu.Unlock()
		s.writeLoop(h.done)
	case roleWriter:
		h.dispatch(br, topic)
	default:
	}
	_ = c.Close()
}

// dispatch reads frames from a writer and queues each, shared, for every
// reader of its topic.
func (h *hub) dispatch(br *bufio.Reader, topic uint32) {
	var hdr [frameHeader]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if n > baselineMaxSize {
			return
		}
		frame := make([]byte, frameHeader+int(n))
		copy(frame, hdr[:])
		if _, err := io.ReadFull(br, frame[frameHeader:]); err != nil {
			return
		}
		for _, s := range h.topicSubs(topic) {
			s.enqueue(frame, h.queueBytes)
		}
	}
}

// measured reports whether frame is a data message of the measured window.
// (With several writers per topic, the writers' frames are interleaved
// whole: each writer connection has its own dispatch loop.)
func measured(frame []byte) bool {
	if len(frame) < frameHeader+headerSize {
		return false
	}
	w := binary.LittleEndian.Uint64(frame[frameHeader+8:])
	return w&(flagProbe|flagEnd) == 0 && w&flagMeasured != 0
}

// isEnd reports whether frame is the end of the stream.
func isEnd(frame []byte) bool {
	return len(frame) >= frameHeader+headerSize && binary.LittleEndian.Uint64(frame[frameHeader+8:])&flagEnd != 0
}

// enqueue queues frame without blocking, dropping the oldest queued frames
// when it does not fit, or frame itself if the batch being written leaves
// no room. The end of the stream (bench control, 16 bytes) is never
// dropped, so that readers do not wait for the drain to run out.
func (s *hubSub) enqueue(frame []byte, limit int) {
	size := len(frame) - frameHeader + BaselineMessageOverhead
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	if s.queued+s.inflight+size > limit {
		for s.queued+s.inflight+size > limit && s.head < len(s.q) {
			if measured(s.q[s.head]) {
				s.dropped++
			}
			s.queued -= len(s.q[s.head]) - frameHeader + BaselineMessageOverhead
			s.q[s.head] = nil
			s.head++
		}
		if s.queued+s.inflight+size > limit && !isEnd(frame) {
			if measured(frame) {
				s.dropped++
			}
			s.mu.Unlock()
			return
		}
	}
	if s.head > 0 && len(s.q) == cap(s.q) {
		n := copy(s.q, s.q[s.head:])
		clear(s.q[n:])
		s.q = s.q[:n]
		s.head = 0
	}
	s.q = append(s.q, frame)
	s.queued += size
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes everything queued in one writev per wake-up until the
// hub stops or a write fails.
func (s *hubSub) writeLoop(done <-chan struct{}) {
	var batch [][]byte
	for {
		select {
		case <-s.wake:
		case <-done:
			return
		}
		s.mu.Lock()
		batch = append(batch[:0], s.q[s.head:]...)
		clear(s.q)
		s.q = s.q[:0]
		s.head = 0
		s.inflight, s.queued = s.queued, 0
		s.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		var m uint64
		for _, f := range batch {
			if measured(f) {
				m++
			}
		}
		bufs := net.Buffers(batch) // WriteTo consumes its own copy of the slice header
		_, err := bufs.WriteTo(s.conn)
		clear(batch)
		s.mu.Lock()
		s.inflight = 0
		if err != nil {
			s.closing = true
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
		s.delivered += m
	}
}
