package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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
// A connection's first byte says what it is: roleWriter or roleReader.

// Defaults of TCPBaselineOptions.
const (
	// DefaultBaselineQueueBytes bounds each reader's queue in the hub, like
	// the relay's default send queue (8 MiB).
	DefaultBaselineQueueBytes = 8 << 20
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
	// Readers is the number of reader connections (default 100).
	Readers int
	// Size is the payload size in bytes (default 1024, at least MinSize).
	Size int
	// Rate is the writer's rate in messages per second; 0 means unpaced.
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

func (o *TCPBaselineOptions) withDefaults() (TCPBaselineOptions, error) {
	c := *o
	if c.Readers == 0 {
		c.Readers = DefaultReaders
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Warmup == 0 {
		c.Warmup = DefaultWarmup
	} else if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.Drain <= 0 {
		c.Drain = DefaultDrain
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = DefaultBaselineQueueBytes
	}
	switch {
	case c.Readers < 1:
		return c, fmt.Errorf("bench: readers %d: want at least 1", c.Readers)
	case c.Size < MinSize || c.Size > baselineMaxSize:
		return c, fmt.Errorf("bench: size %d: want %d to %d bytes", c.Size, MinSize, baselineMaxSize)
	case c.Rate < 0:
		return c, fmt.Errorf("bench: rate %v: want 0 (unpaced) or a positive rate", c.Rate)
	case c.Duration < 0:
		return c, fmt.Errorf("bench: duration %v: must be positive", c.Duration)
	case c.QueueBytes < c.Size+BaselineMessageOverhead:
		return c, fmt.Errorf("bench: queue %d bytes: want at least size + %d = %d", c.QueueBytes, BaselineMessageOverhead, c.Size+BaselineMessageOverhead)
	}
	return c, nil
}

// BaselineOptionsFrom returns the TCPBaseline options matching a Fanout
// run's: readers, size, rate, duration, warm-up, drain, connect timeout.
func BaselineOptionsFrom(o FanoutOptions) TCPBaselineOptions {
	return TCPBaselineOptions{
		Readers: o.Readers, Size: o.Size, Rate: o.Rate, Duration: o.Duration,
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
	o, err := opts.withDefaults()
	if err != nil {
		return TCPBaselineResult{}, err
	}
	h, err := startHub(o.QueueBytes)
	if err != nil {
		return TCPBaselineResult{}, err
	}
	defer h.close()
	res := TCPBaselineResult{
		Scenario: "tcp-baseline", QueueBytes: o.QueueBytes, CPUIncludesHub: true,
		FanoutResult: FanoutResult{URL: "tcp://" + h.addr(), Readers: o.Readers, Size: o.Size, Rate: o.Rate, WarmupSec: o.Warmup.Seconds()},
	}

	// Connect.
	connectStart := time.Now()
	cctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	var all []net.Conn
	defer func() {
		for _, c := range all {
			_ = c.Close()
		}
	}()
	readers := make([]*tcpReader, o.Readers)
	for i := range readers {
		c, err := dialHub(cctx, h.addr(), roleReader)
		if err != nil {
			return res, fmt.Errorf("bench: connect reader %d: %w", i, err)
		}
		all = append(all, c)
		readers[i] = &tcpReader{conn: c, br: bufio.NewReaderSize(c, baselineReadBuffer)}
	}
	wc, err := dialHub(cctx, h.addr(), roleWriter)
	if err != nil {
		return res, fmt.Errorf("bench: connect writer: %w", err)
	}
	all = append(all, wc)

	var ready atomic.Int64
	var aborting atomic.Bool
	var wg sync.WaitGroup
	for _, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(&ready, &aborting)
		}()
	}
	readersDone := make(chan struct{})
	go func() { wg.Wait(); close(readersDone) }()
	abortReaders := func() {
		aborting.Store(true)
		for _, r := range readers {
			_ = r.conn.Close()
		}
		<-readersDone
	}

	if err := syncTCPReaders(cctx, wc, &ready, int64(o.Readers), readersDone); err != nil {
		abortReaders()
		return res, err
	}
	res.ConnectSec = time.Since(connectStart).Seconds()

	// Send, sampling CPU at the edges of the measured window.
	start := time.Now()
	measureStart := start.Add(o.Warmup)
	end := measureStart.Add(o.Duration)
	wsCh := make(chan writerStats, 1)
	go func() { wsCh <- writeTCP(ctx, wc, o.Size, o.Rate, start, measureStart, end) }()

	selfPID := os.Getpid()
	var cpu0 time.Duration
	sampleStart := time.NewTimer(time.Until(measureStart))
	var ws writerStats
	select {
	case <-sampleStart.C:
		cpu0, _ = ProcCPU(selfPID)
		ws = <-wsCh
	case ws = <-wsCh:
		sampleStart.Stop()
	}
	cpu1, _ := ProcCPU(selfPID)
	if ws.err != nil {
		abortReaders()
		return res, ws.err
	}
	writerEnd := time.Now()

	// Drain.
	drain := time.NewTimer(o.Drain)
	select {
	case <-readersDone:
		drain.Stop()
	case <-drain.C:
		abortReaders()
	case <-ctx.Done():
		drain.Stop()
		abortReaders()
		return res, ctx.Err()
	}
	res.DrainSec = time.Since(writerEnd).Seconds()

	// Stop the hub so that its counts are final.
	for _, c := range all {
		_ = c.Close()
	}
	all = nil
	if err := h.close(); err != nil {
		return res, err
	}

	// Collect.
	var hist Histogram
	var bytes uint64
	for _, r := range readers {
		res.Delivered += r.received
		bytes += r.bytes
		res.Gaps += r.gaps
		res.Reordered += r.reordered
		if ws.measured > r.received {
			res.Drops += ws.measured - r.received
		}
		if !r.complete {
			res.Incomplete++
			if r.err != nil {
				res.ReaderErrors++
				if res.FirstError == "" {
					res.FirstError = r.err.Error()
				}
			}
		}
		hist.Merge(&r.hist)
	}
	for _, s := range h.allSubs() {
		res.HubDelivered += s.delivered
		res.HubDropped += s.dropped
	}
	d := ws.measuredEnd.Sub(ws.measuredStart)
	if ws.measured == 0 || d <= 0 {
		d = o.Duration
	}
	res.DurationSec = d.Seconds()
	res.Sent = ws.measured
	res.SentPerSec = float64(ws.measured) / d.Seconds()
	res.DeliveredPerSec = float64(res.Delivered) / d.Seconds()
	res.MBPerSec = float64(bytes) / 1e6 / d.Seconds()
	us := func(ns float64) float64 { return ns / 1e3 }
	res.LatencyUS = LatencyUS{
		P50: us(hist.Quantile(0.50)), P90: us(hist.Quantile(0.90)), P99: us(hist.Quantile(0.99)),
		P999: us(hist.Quantile(0.999)), Max: us(float64(hist.Max())),
	}
	res.ClientCPUSec = (cpu1 - cpu0).Seconds()
	return res, nil
}

// dialHub connects to the hub and announces the role.
func dialHub(ctx context.Context, addr string, role byte) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{role}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// tcpReader is one client-side reader connection and what it saw; the
// bookkeeping is Fanout's reader's. Its fields are written only by its own
// goroutine until it returns.
type tcpReader struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte // for payloads larger than br's buffer

	next      uint64
	received  uint64
	bytes     uint64
	gaps      uint64
	reordered uint64
	probed    bool
	complete  bool
	err       error
	hist      Histogram
}

// run reads length-prefixed messages until the end of the stream or an
// error. Payloads that fit in the bufio.Reader's buffer are parsed in place.
func (r *tcpReader) run(ready *atomic.Int64, aborting *atomic.Bool) {
	fail := func(err error) {
		if !aborting.Load() {
			r.err = err
		}
	}
	for {
		hdr, err := r.br.Peek(frameHeader)
		if err != nil {
			fail(err)
			return
		}
		n := int(binary.LittleEndian.Uint32(hdr))
		if n > baselineMaxSize {
			fail(fmt.Errorf("bench: message of %d bytes from the hub", n))
			return
		}
		var data []byte
		inPlace := frameHeader+n <= r.br.Size()
		if inPlace {
			b, err := r.br.Peek(frameHeader + n)
			if err != nil {
				fail(err)
				return
			}
			data = b[frameHeader:]
		} else {
			_, _ = r.br.Discard(frameHeader)
			if cap(r.buf) < n {
				r.buf = make([]byte, n)
			}
			data = r.buf[:n]
			if _, err := io.ReadFull(r.br, data); err != nil {
				fail(err)
				return
			}
		}
		end := r.observe(data, ready)
		if inPlace {
			_, _ = r.br.Discard(frameHeader + n)
		}
		if end {
			return
		}
	}
}

// observe records one message exactly as Fanout's reader does; it returns
// true at the end of the stream.
func (r *tcpReader) observe(data []byte, ready *atomic.Int64) bool {
	if len(data) < headerSize {
		return false
	}
	now := time.Now().UnixNano()
	sent := int64(binary.LittleEndian.Uint64(data))
	w := binary.LittleEndian.Uint64(data[8:])
	seq := w & seqMask
	switch {
	case w&flagProbe != 0:
		if !r.probed {
			r.probed = true
			ready.Add(1)
		}
		return false
	case w&flagEnd != 0:
		if seq > r.next {
			r.gaps += seq - r.next
		}
		r.complete = true
		return true
	}
	if seq < r.next {
		r.reordered++
		return false
	}
	r.gaps += seq - r.next
	r.next = seq + 1
	if w&flagMeasured != 0 {
		r.received++
		r.bytes += uint64(len(data))
		r.hist.Record(now - sent)
	}
	return false
}

// syncTCPReaders sends probes every syncInterval until want readers have
// seen one.
func syncTCPReaders(ctx context.Context, wc net.Conn, ready *atomic.Int64, want int64, readersDone <-chan struct{}) error {
	var probe [frameHeader + headerSize]byte
	binary.LittleEndian.PutUint32(probe[0:], headerSize)
	deadline := time.NewTimer(syncTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(syncInterval)
	defer tick.Stop()
	for {
		binary.LittleEndian.PutUint64(probe[frameHeader:], uint64(time.Now().UnixNano()))
		binary.LittleEndian.PutUint64(probe[frameHeader+8:], flagProbe)
		if _, err := wc.Write(probe[:]); err != nil {
			return fmt.Errorf("bench: writer: %w", err)
		}
		if ready.Load() == want {
			return nil
		}
		select {
		case <-tick.C:
		case <-readersDone:
			return errors.New("bench: readers disconnected before the start")
		case <-deadline.C:
			return fmt.Errorf("bench: only %d of %d readers subscribed within %v", ready.Load(), want, syncTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// writeTCP is Fanout's write over the hub connection: data messages from
// start until end, unpaced (rate 0) or message i at start + i/rate, each in
// one write, then the end-of-stream message.
func writeTCP(ctx context.Context, wc net.Conn, size int, rate float64, start, measureStart, end time.Time) writerStats {
	var st writerStats
	frame := make([]byte, frameHeader+size)
	binary.LittleEndian.PutUint32(frame, uint32(size))
	payload := frame[frameHeader:]
	for i := headerSize; i < size; i++ {
		payload[i] = byte(i)
	}
	done := ctx.Done()
	ms, en := measureStart.UnixNano(), end.UnixNano()
	var interval float64
	var pace *time.Timer
	if rate > 0 {
		interval = 1e9 / rate
		pace = time.NewTimer(time.Hour)
		defer pace.Stop()
	}
	for i := uint64(0); ; i++ {
		now := time.Now()
		var slot int64
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) * interval))
			slot = due.UnixNano()
			if slot >= en {
				break
			}
			if wait := due.Sub(now); wait > 0 {
				pace.Reset(wait)
				select {
				case <-pace.C:
				case <-done:
					st.err = ctx.Err()
					return st
				}
				now = time.Now()
			}
		} else {
			slot = now.UnixNano()
			if slot >= en {
				break
			}
			if i&255 == 0 {
				select {
				case <-done:
					st.err = ctx.Err()
					return st
				default:
				}
			}
		}
		w := i & seqMask
		if slot >= ms {
			w |= flagMeasured
		}
		binary.LittleEndian.PutUint64(payload[0:], uint64(now.UnixNano()))
		binary.LittleEndian.PutUint64(payload[8:], w)
		if _, err := wc.Write(frame); err != nil {
			st.err = fmt.Errorf("bench: writer: %w", err)
			return st
		}
		st.total++
		if w&flagMeasured != 0 {
			st.measured++
		}
	}
	st.measuredStart, st.measuredEnd = measureStart, time.Now()
	if rate > 0 || st.measuredEnd.Before(end) {
		st.measuredEnd = end
	}
	var m [frameHeader + headerSize]byte
	binary.LittleEndian.PutUint32(m[0:], headerSize)
	binary.LittleEndian.PutUint64(m[frameHeader:], uint64(time.Now().UnixNano()))
	binary.LittleEndian.PutUint64(m[frameHeader+8:], flagEnd|st.total)
	if _, err := wc.Write(m[:]); err != nil {
		st.err = fmt.Errorf("bench: writer: %w", err)
	}
	return st
}

// hub is the in-process fan-out: it accepts one writer and any number of
// readers on a loopback listener and copies every message from the writer
// to every reader's queue.
type hub struct {
	ln         net.Listener
	queueBytes int
	subs       atomic.Pointer[[]*hubSub] // replaced, never modified
	done       chan struct{}             // closed by close
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
	h.subs.Store(&[]*hubSub{})
	h.wg.Add(1)
	go h.acceptLoop()
	return h, nil
}

func (h *hub) addr() string { return h.ln.Addr().String() }

func (h *hub) allSubs() []*hubSub { return *h.subs.Load() }

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

// serve reads the role byte and runs the connection.
func (h *hub) serve(c net.Conn) {
	defer h.wg.Done()
	br := bufio.NewReaderSize(c, baselineReadBuffer)
	role, err := br.ReadByte()
	if err != nil {
		_ = c.Close()
		return
	}
	switch role {
	case roleReader:
		s := &hubSub{conn: c, wake: make(chan struct{}, 1)}
		h.mu.Lock()
		old := *h.subs.Load()
		subs := make([]*hubSub, len(old), len(old)+1)
		copy(subs, old)
		subs = append(subs, s)
		h.subs.Store(&subs)
		h.mu.Unlock()
		s.writeLoop(h.done)
	case roleWriter:
		h.dispatch(br)
	default:
	}
	_ = c.Close()
}

// dispatch reads frames from the writer and queues each, shared, for every
// reader.
func (h *hub) dispatch(br *bufio.Reader) {
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
		for _, s := range *h.subs.Load() {
			s.enqueue(frame, h.queueBytes)
		}
	}
}

// measured reports whether frame is a data message of the measured window.
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
