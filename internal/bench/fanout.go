// Package bench holds the load generators behind `switchboard bench`: the
// scenarios (Fanout: one writer, many readers on one topic), the helpers
// they share (a child relay server, token minting, /proc sampling) and a
// lock-free log-linear latency histogram.
//
// Every scenario runs on loopback only, is bounded in time and stops by
// itself. Clients use pkg/client, so a scenario measures the relay and the
// public client together.
package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/internal/auth"
	"switchboard/pkg/client"
)

// Defaults of FanoutOptions.
const (
	DefaultTopic          = "bench/fanout"
	DefaultReaders        = 100
	DefaultSize           = 1024
	DefaultDuration       = 10 * time.Second
	DefaultWarmup         = time.Second
	DefaultDrain          = 3 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	// MinSize is the smallest payload: a send time and a sequence number.
	MinSize = headerSize

	// syncTimeout bounds the wait for every reader to be subscribed.
	syncTimeout = 10 * time.Second
	// syncInterval is how often probes are sent while waiting for readers.
	syncInterval = 2 * time.Millisecond
	// dialParallel is how many connections are dialled at once.
	dialParallel = 16
	// closeTimeout bounds closing the connections at the end.
	closeTimeout = 5 * time.Second
)

// Payload header: bytes 0-7 the send time (UnixNano, little endian), bytes
// 8-15 the sequence number with flags in the top bits.
const (
	headerSize   = 16
	flagProbe    = uint64(1) << 63 // subscription probe, not a data message
	flagEnd      = uint64(1) << 62 // end of stream; the sequence is the number of data messages sent
	flagMeasured = uint64(1) << 61 // sent inside the measured window
	seqMask      = uint64(1)<<56 - 1
)

// FanoutOptions configure Fanout. Zero values mean the defaults above.
type FanoutOptions struct {
	// URL is the relay's base URL (loopback only). Required.
	URL string
	// Token grants read and write on Topic. If empty, tokens are minted
	// with Secret.
	Token string
	// Secret signs minted tokens (HS256), with URL as the audience.
	Secret []byte
	// Topic is the topic used (default bench/fanout).
	Topic string
	// Readers is the number of reader connections (default 100).
	Readers int
	// Size is the payload size in bytes (default 1024, at least MinSize).
	Size int
	// Rate is the writer's rate in messages per second; 0 means unpaced.
	Rate float64
	// Duration is the measured window (default 10 s).
	Duration time.Duration
	// Warmup precedes the measured window; its messages are not measured
	// (default 1 s; negative means none).
	Warmup time.Duration
	// Drain bounds the wait for the last messages after the writer stops
	// (default 3 s).
	Drain time.Duration
	// ConnectTimeout bounds connecting all readers and the writer
	// (default 30 s).
	ConnectTimeout time.Duration
	// Client configures every connection; nil means the client's defaults.
	Client *client.Options
	// ServerPID, if positive, is the relay's process id: its CPU time in the
	// measured window and its peak RSS are reported.
	ServerPID int
}

func (o *FanoutOptions) withDefaults() (FanoutOptions, error) {
	c := *o
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
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
	switch {
	case c.Readers < 1:
		return c, fmt.Errorf("bench: readers %d: want at least 1", c.Readers)
	case c.Size < MinSize:
		return c, fmt.Errorf("bench: size %d: want at least %d bytes", c.Size, MinSize)
	case c.Rate < 0:
		return c, fmt.Errorf("bench: rate %v: want 0 (unpaced) or a positive rate", c.Rate)
	case c.Duration < 0:
		return c, fmt.Errorf("bench: duration %v: must be positive", c.Duration)
	case c.Token == "" && len(c.Secret) == 0:
		return c, errors.New("bench: a token or a secret is needed")
	}
	if err := CheckLoopbackURL(c.URL); err != nil {
		return c, err
	}
	return c, nil
}

// LatencyUS are latency quantiles in microseconds.
type LatencyUS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// FanoutResult is the outcome of Fanout. Counts cover the measured window:
// messages the writer sent in it and their deliveries.
type FanoutResult struct {
	URL     string  `json:"url"`
	Topic   string  `json:"topic,omitempty"` // empty for tcp-baseline
	Readers int     `json:"readers"`
	Size    int     `json:"size"`
	Rate    float64 `json:"rate"` // requested; 0 = unpaced

	DurationSec float64 `json:"duration_sec"` // measured window, as it happened
	WarmupSec   float64 `json:"warmup_sec"`
	ConnectSec  float64 `json:"connect_sec"` // connecting and subscribing every connection
	DrainSec    float64 `json:"drain_sec"`   // from the writer's end until every reader had everything (or gave up)

	Sent            uint64    `json:"sent"`
	SentPerSec      float64   `json:"sent_per_sec"`
	Delivered       uint64    `json:"delivered"` // sum over readers
	DeliveredPerSec float64   `json:"delivered_per_sec"`
	MBPerSec        float64   `json:"mb_per_sec"` // delivered payload, 1 MB = 1e6 bytes
	LatencyUS       LatencyUS `json:"latency_us"` // one-way, writer send to reader receipt
	// Drops is, summed over readers, measured messages sent minus received.
	Drops uint64 `json:"drops"`
	// Gaps is, summed over readers, the messages missing from their
	// sequence (whole run, warm-up included).
	Gaps uint64 `json:"gaps"`
	// Reordered counts messages that arrived with a sequence number at or
	// below one already seen (out of order or duplicated); never counted as
	// delivered. Any is a relay bug.
	Reordered uint64 `json:"reordered"`
	// ReaderErrors counts readers whose connection failed before the end.
	ReaderErrors int    `json:"reader_errors"`
	FirstError   string `json:"first_error,omitempty"`
	// Incomplete counts readers that had not seen the end of the stream
	// when the drain period ran out.
	Incomplete int `json:"incomplete"`

	ClientCPUSec       float64  `json:"client_cpu_sec"` // this process, measured window
	ServerCPUSec       *float64 `json:"server_cpu_sec,omitempty"`
	ServerPeakRSSBytes *int64   `json:"server_peak_rss_bytes,omitempty"`
}

// reader is one reader connection and what it saw. Its fields are written
// only by its own goroutine until done is closed.
type reader struct {
	conn *client.Conn
	buf  []byte

	next      uint64 // next expected sequence number
	received  uint64 // measured data messages
	bytes     uint64
	gaps      uint64
	reordered uint64
	probed    bool
	complete  bool  // saw the end of the stream
	err       error // a failure before the end; not set when the bench closed the connection
	hist      Histogram
}

// run reads until the end of the stream or an error. It does not allocate
// or synchronise per message.
func (r *reader) run(ready *atomic.Int64, aborting *atomic.Bool) {
	ctx := context.Background() // no Done: no timer per read in the websocket library
	buf := r.buf
	for {
		_, data, err := r.conn.ReadInto(ctx, buf)
		if err != nil {
			if !aborting.Load() {
				r.err = err
			}
			return
		}
		buf = data
		if len(data) < headerSize {
			continue
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
			continue
		case w&flagEnd != 0:
			if seq > r.next {
				r.gaps += seq - r.next
			}
			r.complete = true
			return
		}
		if seq < r.next {
			r.reordered++
			continue
		}
		r.gaps += seq - r.next
		r.next = seq + 1
		if w&flagMeasured != 0 {
			r.received++
			r.bytes += uint64(len(data))
			r.hist.Record(now - sent)
		}
	}
}

// writerStats is what the writer did.
type writerStats struct {
	total         uint64 // data messages sent
	measured      uint64
	measuredStart time.Time
	measuredEnd   time.Time
	err           error
}

// Fanout runs the fan-out scenario: one writer and opts.Readers readers on
// one topic. It connects everything, waits until every reader receives the
// writer's probes, sends for Warmup+Duration, waits up to Drain for the
// readers to see the end of the stream, closes everything and returns the
// measurements. It returns an error if it could not connect or the writer
// failed; reader failures are reported in the result.
func Fanout(ctx context.Context, opts FanoutOptions) (FanoutResult, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return FanoutResult{}, err
	}
	res := FanoutResult{URL: o.URL, Topic: o.Topic, Readers: o.Readers, Size: o.Size, Rate: o.Rate, WarmupSec: o.Warmup.Seconds()}

	token := o.Token
	if token == "" {
		ttl := o.ConnectTimeout + syncTimeout + o.Warmup + o.Duration + o.Drain + time.Hour
		if token, err = MintToken(o.Secret, o.URL, o.Topic, ttl); err != nil {
			return res, err
		}
	}

	// Connect.
	connectStart := time.Now()
	cctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	readers := make([]*reader, o.Readers)
	var all []*client.Conn // everything connected, for the final close
	defer func() { closeAll(all) }()
	if err := dialAll(cctx, o.URL, o.Topic, token, o.Client, readers, o.Size); err != nil {
		for _, r := range readers {
			if r != nil {
				all = append(all, r.conn)
			}
		}
		return res, err
	}
	for _, r := range readers {
		all = append(all, r.conn)
	}
	wc, err := client.Dial(cctx, o.URL, o.Topic, token, o.Client)
	if err != nil {
		return res, fmt.Errorf("bench: connect writer: %w", err)
	}
	all = append(all, wc)
	// The writer reads too, so that it answers pings and sees a close.
	go func() {
		for {
			if _, _, err := wc.Read(context.Background()); err != nil {
				return
			}
		}
	}()

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
			_ = r.conn.CloseNow()
		}
		<-readersDone
	}

	// Wait until every reader is subscribed: probe until each has seen one.
	if err := syncReaders(cctx, wc, &ready, int64(o.Readers), readersDone); err != nil {
		abortReaders()
		return res, err
	}
	res.ConnectSec = time.Since(connectStart).Seconds()

	// Send, sampling CPU at the edges of the measured window.
	start := time.Now()
	measureStart := start.Add(o.Warmup)
	end := measureStart.Add(o.Duration)
	wsCh := make(chan writerStats, 1)
	go func() { wsCh <- write(ctx, wc, o.Size, o.Rate, start, measureStart, end) }()

	selfPID := os.Getpid()
	var clientCPU0, serverCPU0 time.Duration
	var serverErr error
	sampleStart := time.NewTimer(time.Until(measureStart))
	var ws writerStats
	select {
	case <-sampleStart.C:
		clientCPU0, _ = ProcCPU(selfPID)
		if o.ServerPID > 0 {
			serverCPU0, serverErr = ProcCPU(o.ServerPID)
		}
		ws = <-wsCh
	case ws = <-wsCh:
		sampleStart.Stop()
	}
	clientCPU1, _ := ProcCPU(selfPID)
	var serverCPU1 time.Duration
	if o.ServerPID > 0 && serverErr == nil {
		serverCPU1, serverErr = ProcCPU(o.ServerPID)
	}
	if ws.err != nil {
		abortReaders()
		return res, ws.err
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

// dialAll connects every reader, a few at a time.
func dialAll(ctx context.Context, baseURL, topic, token string, copts *client.Options, readers []*reader, size int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range readers {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := client.Dial(ctx, baseURL, topic, token, copts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("bench: connect reader %d: %w", i, err)
					cancel()
				}
				return
			}
			readers[i] = &reader{conn: c, buf: make([]byte, 0, 2*size+64)}
		}()
	}
	wg.Wait()
	return firstErr
}

// syncReaders sends probes every syncInterval until want readers have seen
// one.
func syncReaders(ctx context.Context, wc *client.Conn, ready *atomic.Int64, want int64, readersDone <-chan struct{}) error {
	var probe [headerSize]byte
	deadline := time.NewTimer(syncTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(syncInterval)
	defer tick.Stop()
	for {
		binary.LittleEndian.PutUint64(probe[0:], uint64(time.Now().UnixNano()))
		binary.LittleEndian.PutUint64(probe[8:], flagProbe)
		if err := wc.Write(ctx, client.Binary, probe[:]); err != nil {
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

// write sends data messages from start until end, unpaced (rate 0) or
// message i at start + i/rate, then the end-of-stream message.
func write(ctx context.Context, wc *client.Conn, size int, rate float64, start, measureStart, end time.Time) writerStats {
	var st writerStats
	payload := make([]byte, size)
	for i := headerSize; i < size; i++ {
		payload[i] = byte(i)
	}
	bg := context.Background() // no Done: no timer per write
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
		if err := wc.Write(bg, client.Binary, payload); err != nil {
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
	binary.LittleEndian.PutUint64(m[8:], flagEnd|st.total)
	if err := wc.Write(bg, client.Binary, m[:]); err != nil {
		st.err = fmt.Errorf("bench: writer: %w", err)
	}
	return st
}

// closeAll closes conns in parallel, bounded by closeTimeout.
func closeAll(conns []*client.Conn) {
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

// MintToken returns an HS256 token signed with secret granting read and
// write on topic (prefix session) for ttl, with audience baseURL.
func MintToken(secret []byte, baseURL, topic string, ttl time.Duration) (string, error) {
	key, err := auth.NewHMACKey("HS256", secret)
	if err != nil {
		return "", err
	}
	c := auth.NewClaims(strings.TrimSuffix(baseURL, "/"), time.Now(), ttl)
	c.Topic, c.Prefix, c.Scopes, c.Subject = topic, client.DefaultPrefix, []string{auth.ScopeRead, auth.ScopeWrite}, "switchboard-bench"
	return key.Sign(c)
}

// CheckLoopbackURL returns an error unless raw is an http(s) or ws(s) URL
// whose host is a loopback address or "localhost".
func CheckLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bench: URL %q: want http://127.0.0.1:PORT", raw)
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return fmt.Errorf("bench: URL %q: want http://127.0.0.1:PORT", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("bench: URL %q: only loopback addresses are allowed", raw)
}
