package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The fan-out scenario, whatever carries the messages: Fanout runs it over
// the relay (websocket, pkg/client), TCPBaseline over plain loopback TCP
// through an in-process hub. Only the transport differs; pacing, probes,
// the readers' accounting, the drain and the results are the same code.

// msgConn is a connection as the scenario sees it: it sends and receives
// whole messages (payloads).
type msgConn interface {
	// WriteMessage sends one message. ctx bounds the write where the
	// transport supports it; the writer's hot path passes
	// context.Background(), which costs no timer per write.
	WriteMessage(ctx context.Context, p []byte) error
	// ReadMessage returns the next message, in storage owned by the
	// connection and valid until the next call. It does not allocate once
	// its buffer has grown to the message size.
	ReadMessage() ([]byte, error)
	// Close closes the connection gracefully, CloseNow at once.
	Close() error
	CloseNow() error
}

// transport connects the scenario's readers and writers to topic number
// topic (0 to Topics-1).
type transport interface {
	dialReader(ctx context.Context, topic int) (msgConn, error)
	dialWriter(ctx context.Context, topic int) (msgConn, error)
	// parallelDials is how many connections are dialled at once.
	parallelDials() int
}

// reader is one reader connection and what it saw. Its fields are written
// only by its own goroutine until it returns.
type reader struct {
	conn  msgConn
	topic int

	next      []uint64 // per writer of the topic: next expected sequence number
	ended     int      // writers whose end of stream was seen
	received  uint64   // measured data messages
	bytes     uint64
	gaps      uint64
	reordered uint64
	probed    bool
	// inWindow counts data messages received (whenever sent, repeated or
	// out of order included) while the clock was inside the measured
	// window: the delivery rate even when a backlog from the warm-up means
	// few measured messages arrive.
	inWindow uint64
	window   *window
	complete bool  // saw the end of the stream
	err      error // a failure before the end; not set when the bench closed the connection
	hist     Histogram
}

// newReader returns the reader of conn on topic, which has writers writers.
func newReader(conn msgConn, topic, writers int, w *window) *reader {
	return &reader{conn: conn, topic: topic, next: make([]uint64, writers), window: w}
}

// window is the measured window in Unix nanoseconds, set once before the
// writers start (zero until then: no time is inside it).
type window struct{ from, to atomic.Int64 }

func (w *window) contains(ns int64) bool { return ns >= w.from.Load() && ns < w.to.Load() }

// run reads until the end of the stream or an error. It does not allocate
// or synchronise per message.
func (r *reader) run(ready *atomic.Int64, aborting *atomic.Bool) {
	for {
		data, err := r.conn.ReadMessage()
		if err != nil {
			if !aborting.Load() {
				r.err = err
			}
			return
		}
		if r.observe(data, ready) {
			return
		}
	}
}

// observe records one message; it returns true at the end of the stream
// (when every writer of the topic has ended its own).
func (r *reader) observe(data []byte, ready *atomic.Int64) bool {
	if len(data) < headerSize {
		return false
	}
	now := time.Now().UnixNano()
	sent := int64(binary.LittleEndian.Uint64(data))
	w := binary.LittleEndian.Uint64(data[8:])
	seq := w & seqMask
	wi := int(w >> writerShift & writerMask)
	switch {
	case w&flagProbe != 0:
		if !r.probed {
			r.probed = true
			ready.Add(1)
		}
		return false
	case wi >= len(r.next):
		return false // not from a writer of this scenario
	case w&flagEnd != 0:
		if seq > r.next[wi] {
			r.gaps += seq - r.next[wi]
		}
		r.ended++
		if r.ended < len(r.next) {
			return false
		}
		r.complete = true
		return true
	}
	if r.window.contains(now) {
		r.inWindow++
	}
	if seq < r.next[wi] {
		r.reordered++
		return false
	}
	r.gaps += seq - r.next[wi]
	r.next[wi] = seq + 1
	if w&flagMeasured != 0 {
		r.received++
		r.bytes += uint64(len(data))
		r.hist.Record(now - sent)
	}
	return false
}

// writerStats is what the writer did.
type writerStats struct {
	total         uint64 // data messages sent
	measured      uint64
	measuredStart time.Time
	measuredEnd   time.Time
	maxLate       time.Duration // paced: the latest a message went after its due time
	err           error
}

// newResult is the result of o before anything ran.
func newResult(o FanoutOptions) FanoutResult {
	return FanoutResult{
		URL: o.URL, Topic: o.Topic, Readers: o.Readers, Writers: max(o.Writers, 1), Topics: max(o.Topics, 1),
		Size: o.Size, Rate: o.Rate, WarmupSec: o.Warmup.Seconds(), ReaderClient: o.ReaderClient,
	}
}

// runScenario runs the fan-out over tr with o (defaults applied; URL and
// Topic are only reported): on each of o.Topics topics it connects
// o.Readers readers and o.Writers writers, waits until every reader receives
// a probe of its topic's first writer, lets every writer send for
// Warmup+Duration, waits up to Drain for the readers to see the end of every
// writer's stream, closes everything and returns the measurements. It
// returns an error if it could not connect or a writer failed; reader
// failures are reported in the result.
func runScenario(ctx context.Context, o FanoutOptions, tr transport) (FanoutResult, error) {
	res := newResult(o)
	nTopics, nWriters := max(o.Topics, 1), max(o.Writers, 1)

	// Connect.
	connectStart := time.Now()
	cctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	var all []msgConn // everything connected, for the final close
	defer func() { closeAll(all) }()
	rconns, err := dialAll(cctx, tr.parallelDials(), nTopics*o.Readers, "reader", func(ctx context.Context, i int) (msgConn, error) {
		return tr.dialReader(ctx, i/o.Readers)
	})
	all = append(all, rconns...)
	if err != nil {
		return res, err
	}
	readers := make([]*reader, len(rconns))
	var win window
	for i, c := range rconns {
		readers[i] = newReader(c, i/o.Readers, nWriters, &win)
	}
	wconns, err := dialAll(cctx, tr.parallelDials(), nTopics*nWriters, "writer", func(ctx context.Context, i int) (msgConn, error) {
		return tr.dialWriter(ctx, i/nWriters)
	})
	all = append(all, wconns...)
	if err != nil {
		return res, err
	}

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
		// In parallel: a websocket's CloseNow waits for its reader to let
		// go, which on a saturated machine takes a scheduling round each.
		var cwg sync.WaitGroup
		for _, r := range readers {
			cwg.Add(1)
			go func() { defer cwg.Done(); _ = r.conn.CloseNow() }()
		}
		cwg.Wait()
		<-readersDone
	}

	// Wait until every reader is subscribed: the first writer of each topic
	// probes until each reader has seen one.
	probers := make([]msgConn, nTopics)
	for t := range probers {
		probers[t] = wconns[t*nWriters]
	}
	if err := syncReaders(cctx, probers, &ready, int64(len(readers)), readersDone); err != nil {
		abortReaders()
		return res, err
	}
	res.ConnectSec = time.Since(connectStart).Seconds()

	// Send, sampling CPU at the edges of the measured window. Paced writers
	// are spread evenly over one interval, so that they do not all send at
	// the same instant.
	start := time.Now()
	measureStart := start.Add(o.Warmup)
	end := measureStart.Add(o.Duration)
	// from first: until to is stored the window is empty, never [0, end).
	win.from.Store(measureStart.UnixNano())
	win.to.Store(end.UnixNano())
	stats := make([]writerStats, len(wconns))
	writersDone := make(chan struct{})
	var wwg sync.WaitGroup
	for j, wc := range wconns {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			s := start
			if o.Rate > 0 {
				s = start.Add(time.Duration(float64(j) / float64(len(wconns)) * 1e9 / o.Rate))
			}
			stats[j] = write(ctx, wc, j%nWriters, o.Size, o.Rate, s, measureStart, end)
		}()
	}
	go func() { wwg.Wait(); close(writersDone) }()

	selfPID := os.Getpid()
	var clientCPU0, serverCPU0 time.Duration
	var serverErr error
	sampleStart := time.NewTimer(time.Until(measureStart))
	select {
	case <-sampleStart.C:
		clientCPU0, _ = ProcCPU(selfPID)
		if o.ServerPID > 0 {
			serverCPU0, serverErr = ProcCPU(o.ServerPID)
		}
		<-writersDone
	case <-writersDone:
		sampleStart.Stop()
	}
	clientCPU1, _ := ProcCPU(selfPID)
	var serverCPU1 time.Duration
	if o.ServerPID > 0 && serverErr == nil {
		serverCPU1, serverErr = ProcCPU(o.ServerPID)
	}
	for _, ws := range stats {
		if ws.err != nil {
			abortReaders()
			return res, ws.err
		}
	}
	writerEnd := time.Now()

	// Drain: wait until every reader saw the end of the stream, or give up.
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

	// Collect.
	topicMeasured := make([]uint64, nTopics) // measured messages sent to each topic
	measuredEnd := measureStart
	var maxLate time.Duration
	for j, ws := range stats {
		topicMeasured[j/nWriters] += ws.measured
		res.Sent += ws.measured
		if ws.measuredEnd.After(measuredEnd) {
			measuredEnd = ws.measuredEnd
		}
		maxLate = max(maxLate, ws.maxLate)
	}
	var hist Histogram
	var bytes uint64
	for _, r := range readers {
		res.Delivered += r.received
		res.ReceivedInWindow += r.inWindow
		bytes += r.bytes
		res.Gaps += r.gaps
		res.Reordered += r.reordered
		if m := topicMeasured[r.topic]; m > r.received {
			res.Drops += m - r.received
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
	d := measuredEnd.Sub(measureStart)
	if res.Sent == 0 || d <= 0 {
		d = o.Duration
	}
	res.DurationSec = d.Seconds()
	res.SentPerSec = float64(res.Sent) / d.Seconds()
	res.DeliveredPerSec = float64(res.Delivered) / d.Seconds()
	res.DeliveredPerSecWithDrain = float64(res.Delivered) / (d.Seconds() + res.DrainSec)
	res.MBPerSec = float64(bytes) / 1e6 / d.Seconds()
	res.ReceivedInWindowPerSec = float64(res.ReceivedInWindow) / o.Duration.Seconds()
	us := func(ns float64) float64 { return ns / 1e3 }
	res.LatencyUS = LatencyUS{
		P50: us(hist.Quantile(0.50)), P90: us(hist.Quantile(0.90)), P99: us(hist.Quantile(0.99)),
		P999: us(hist.Quantile(0.999)), Max: us(float64(hist.Max())),
	}
	if o.Rate > 0 {
		v := us(float64(maxLate))
		res.WriterMaxLateUS = &v
	}
	res.ClientCPUSec = (clientCPU1 - clientCPU0).Seconds()
	if o.ServerPID > 0 && serverErr == nil {
		v := (serverCPU1 - serverCPU0).Seconds()
		res.ServerCPUSec = &v
		if rss, err := ProcPeakRSS(o.ServerPID); err == nil {
			res.ServerPeakRSSBytes = &rss
		}
	}
	return res, nil
}

// dialAll connects n connections with dial, width at a time. On error it
// returns the connections made so far (nil where none) with the first error.
func dialAll(ctx context.Context, width, n int, what string, dial func(ctx context.Context, i int) (msgConn, error)) ([]msgConn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, width)
	conns := make([]msgConn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := dial(ctx, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("bench: connect %s %d: %w", what, i, err)
					cancel()
				}
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		made := conns[:0:0]
		for _, c := range conns {
			if c != nil {
				made = append(made, c)
			}
		}
		return made, firstErr
	}
	return conns, nil
}

// syncReaders sends probes on every connection of probers every
// syncInterval until want readers have seen one.
func syncReaders(ctx context.Context, probers []msgConn, ready *atomic.Int64, want int64, readersDone <-chan struct{}) error {
	var probe [headerSize]byte
	deadline := time.NewTimer(syncTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(syncInterval)
	defer tick.Stop()
	for {
		for _, wc := range probers {
			if ready.Load() == want {
				return nil
			}
			binary.LittleEndian.PutUint64(probe[0:], uint64(time.Now().UnixNano()))
			binary.LittleEndian.PutUint64(probe[8:], flagProbe)
			if err := wc.WriteMessage(ctx, probe[:]); err != nil {
				return fmt.Errorf("bench: writer: %w", err)
			}
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

// write sends data messages as writer number id of its topic from start
// until end, unpaced (rate 0) or message i at start + i/rate, then the
// end-of-stream message.
func write(ctx context.Context, wc msgConn, id, size int, rate float64, start, measureStart, end time.Time) writerStats {
	var st writerStats
	payload := make([]byte, size)
	for i := headerSize; i < size; i++ {
		payload[i] = byte(i)
	}
	bg := context.Background() // no Done: no timer per write
	done := ctx.Done()
	ms, en := measureStart.UnixNano(), end.UnixNano()
	wid := uint64(id) << writerShift
	var interval float64
	var pace *time.Timer
	if rate > 0 {
		interval = 1e9 / rate
		pace = time.NewTimer(time.Hour)
		defer pace.Stop()
	}
	for i := uint64(0); ; i++ {
		now := time.Now()
		var slot int64 // the time that places the message in warm-up, window or after
		if rate > 0 {
			// Message i is due at start + i/rate. When late, it goes at
			// once: the schedule, not the previous send, sets the next.
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
			if slot >= ms {
				st.maxLate = max(st.maxLate, now.Sub(due))
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
		w := i&seqMask | wid
		if slot >= ms {
			w |= flagMeasured
		}
		binary.LittleEndian.PutUint64(payload[0:], uint64(now.UnixNano()))
		binary.LittleEndian.PutUint64(payload[8:], w)
		if err := wc.WriteMessage(bg, payload); err != nil {
			st.err = fmt.Errorf("bench: writer: %w", err)
			return st
		}
		st.total++
		if w&flagMeasured != 0 {
			st.measured++
		}
	}
	// The window starts at measureStart. Paced, it is the schedule's;
	// unpaced, it lasts until the last measured message was written (a
	// write may block past end).
	st.measuredStart, st.measuredEnd = measureStart, time.Now()
	if rate > 0 || st.measuredEnd.Before(end) {
		st.measuredEnd = end
	}
	var m [headerSize]byte
	binary.LittleEndian.PutUint64(m[0:], uint64(time.Now().UnixNano()))
	binary.LittleEndian.PutUint64(m[8:], flagEnd|wid|st.total)
	if err := wc.WriteMessage(bg, m[:]); err != nil {
		st.err = fmt.Errorf("bench: writer: %w", err)
	}
	return st
}

// closeAll closes conns in parallel, bounded by closeTimeout.
func closeAll(conns []msgConn) {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Close() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		for _, c := range conns {
			_ = c.CloseNow()
		}
		<-done
	}
}
