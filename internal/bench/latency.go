package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Defaults of LatencyOptions.
const (
	DefaultLatencyTopic = "bench/latency"
	DefaultLatencyRate  = 100
	DefaultLatencySize  = 1024
)

// LatencyOptions configure Latency. Zero values mean the defaults.
type LatencyOptions struct {
	// URL is the relay's base URL (loopback only). Required.
	URL string
	// Token grants read and write on Topic; if empty, one is minted with
	// Secret.
	Token  string
	Secret []byte
	// Topic (default bench/latency).
	Topic string
	// Rate is the writer's rate in messages per second (default 100).
	Rate float64
	// Size is the payload size (default 1024, at least MinSize).
	Size int
	// Duration is the measured window (default 10 s); Warmup precedes it
	// (default 1 s, negative: none); Drain bounds the wait for the last
	// echoes (default 3 s); ConnectTimeout bounds connecting (default 30 s).
	Duration, Warmup, Drain, ConnectTimeout time.Duration
	// Client configures both connections; nil means the client's defaults.
	Client *client.Options
	// ServerPID, if positive, is read for CPU time and peak RSS.
	ServerPID int
}

// LatencyResult is what Latency measured: one writer at a low fixed rate,
// one reader that sends every message back on the same topic.
type LatencyResult struct {
	Scenario    string  `json:"scenario"` // "latency"
	URL         string  `json:"url"`
	Topic       string  `json:"topic"`
	Size        int     `json:"size"`
	Rate        float64 `json:"rate"`
	DurationSec float64 `json:"duration_sec"`
	WarmupSec   float64 `json:"warmup_sec"`
	ConnectSec  float64 `json:"connect_sec"`
	// Sent counts the writer's measured messages, Received those the
	// echoing reader got, Echoed the echoes back at the writer; Lost is
	// Sent - Echoed.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Echoed   uint64 `json:"echoed"`
	Lost     uint64 `json:"lost"`
	// OneWayUS is writer send → reader receipt; RoundTripUS is writer send
	// → reader receipt → reader send → writer receipt (the reader echoes at
	// once, from its read loop).
	OneWayUS        LatencyUS `json:"one_way_us"`
	RoundTripUS     LatencyUS `json:"round_trip_us"`
	WriterMaxLateUS float64   `json:"writer_max_late_us"`
	FirstError      string    `json:"first_error,omitempty"`

	// CPU times cover the warm-up and the measured window.
	ClientCPUSec       float64  `json:"client_cpu_sec"`
	ServerCPUSec       *float64 `json:"server_cpu_sec,omitempty"`
	ServerPeakRSSBytes *int64   `json:"server_peak_rss_bytes,omitempty"`
}

func (o *LatencyOptions) withDefaults() (LatencyOptions, error) {
	c := *o
	if c.Topic == "" {
		c.Topic = DefaultLatencyTopic
	}
	if c.Rate == 0 {
		c.Rate = DefaultLatencyRate
	}
	if c.Size == 0 {
		c.Size = DefaultLatencySize
	}
	defaultTiming(&c.Duration, &c.Warmup, &c.Drain, &c.ConnectTimeout)
	switch {
	case c.Rate < 0:
		return c, fmt.Errorf("bench: rate %v: want a positive rate", c.Rate)
	case c.Size < MinSize:
		return c, fmt.Errorf("bench: size %d: want at least %d bytes", c.Size, MinSize)
	case c.Duration < 0:
		return c, fmt.Errorf("bench: duration %v: must be positive", c.Duration)
	case c.Token == "" && len(c.Secret) == 0:
		return c, errors.New("bench: a token or a secret is needed")
	}
	return c, CheckLoopbackURL(c.URL)
}

// Latency runs one paced writer and one reader that echoes every message
// back on the same topic (the relay does not send a writer its own
// messages, so the writer receives only the echoes), and reports one-way
// and round-trip latency quantiles.
func Latency(ctx context.Context, opts LatencyOptions) (LatencyResult, error) {
	o, err := opts.withDefaults()
	res := LatencyResult{Scenario: "latency", URL: o.URL, Topic: o.Topic, Size: o.Size, Rate: o.Rate, WarmupSec: o.Warmup.Seconds()}
	if err != nil {
		return res, err
	}
	token := o.Token
	if token == "" {
		ttl := o.ConnectTimeout + syncTimeout + o.Warmup + o.Duration + o.Drain + time.Hour
		if token, err = MintToken(o.Secret, o.URL, o.Topic, ttl); err != nil {
			return res, err
		}
	}
	tr := &wsTransport{url: o.URL, topics: []string{o.Topic}, readToken: token, writeToken: token, opts: o.Client, size: o.Size}

	connectStart := time.Now()
	cctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	echoer, err := tr.dialReader(cctx, 0)
	if err != nil {
		return res, fmt.Errorf("bench: connect reader: %w", err)
	}
	defer echoer.CloseNow()
	// The writer's connection reads the echoes itself (not the
	// transport's discarding reader).
	wc, err := client.Dial(cctx, o.URL, o.Topic, token, o.Client)
	if err != nil {
		return res, fmt.Errorf("bench: connect writer: %w", err)
	}
	writer := &wsConn{Conn: wc, buf: make([]byte, 0, 2*o.Size+64)}
	defer writer.CloseNow()

	// The reader echoes everything, probes included, and records one-way
	// latency; it stops after echoing the end of the stream.
	var oneWay Histogram
	var received uint64
	echoDone := make(chan error, 1)
	go func() {
		for {
			data, err := echoer.ReadMessage()
			if err != nil {
				echoDone <- err
				return
			}
			if len(data) < headerSize {
				continue
			}
			now := time.Now().UnixNano()
			w := binary.LittleEndian.Uint64(data[8:])
			if w&(flagMeasured|flagProbe|flagEnd) == flagMeasured {
				received++
				oneWay.Record(now - int64(binary.LittleEndian.Uint64(data)))
			}
			binary.LittleEndian.PutUint64(data[8:], w|flagEcho)
			if err := echoer.WriteMessage(context.Background(), data); err != nil {
				echoDone <- err
				return
			}
			if w&flagEnd != 0 {
				echoDone <- nil
				return
			}
		}
	}()

	// The writer's reader records round trips; the first echoed probe
	// shows that both are subscribed.
	var rtt Histogram
	var echoed uint64
	var probed atomic.Bool
	probedCh := make(chan struct{})
	backDone := make(chan error, 1)
	go func() {
		for {
			data, err := writer.ReadMessage()
			if err != nil {
				backDone <- err
				return
			}
			if len(data) < headerSize {
				continue
			}
			now := time.Now().UnixNano()
			w := binary.LittleEndian.Uint64(data[8:])
			switch {
			case w&flagEcho == 0:
			case w&flagProbe != 0:
				if !probed.Swap(true) {
					close(probedCh)
				}
			case w&flagEnd != 0:
				backDone <- nil
				return
			case w&flagMeasured != 0:
				echoed++
				rtt.Record(now - int64(binary.LittleEndian.Uint64(data)))
			}
		}
	}()
	if err := probeUntil(cctx, writer, probedCh); err != nil {
		return res, err
	}
	res.ConnectSec = time.Since(connectStart).Seconds()

	start := time.Now()
	measureStart := start.Add(o.Warmup)
	end := measureStart.Add(o.Duration)
	cpu0, _ := ProcCPU(os.Getpid())
	var scpu0 time.Duration
	var serr error
	if o.ServerPID > 0 {
		scpu0, serr = ProcCPU(o.ServerPID)
	}
	ws := write(ctx, writer, 0, o.Size, o.Rate, start, measureStart, end)
	if ws.err != nil {
		return res, ws.err
	}
	cpu1, _ := ProcCPU(os.Getpid())
	if o.ServerPID > 0 && serr == nil {
		scpu1, err := ProcCPU(o.ServerPID)
		if err == nil {
			v := (scpu1 - scpu0).Seconds()
			res.ServerCPUSec = &v
		}
		if rss, err := ProcPeakRSS(o.ServerPID); err == nil {
			res.ServerPeakRSSBytes = &rss
		}
	}
	res.ClientCPUSec = (cpu1 - cpu0).Seconds()

	// Wait for the echo of the end of the stream, or give up: closing the
	// connections ends both readers.
	drain := time.NewTimer(o.Drain)
	defer drain.Stop()
	var echoErr, backErr error
	gotEcho, gotBack := false, false
	for !gotEcho || !gotBack {
		select {
		case echoErr = <-echoDone:
			gotEcho = true
		case backErr = <-backDone:
			gotBack = true
		case <-drain.C:
			_ = echoer.CloseNow()
			_ = writer.CloseNow()
			if !gotEcho {
				echoErr = <-echoDone
				gotEcho = true
			}
			if !gotBack {
				backErr = <-backDone
				gotBack = true
			}
			if echoErr == nil && backErr == nil {
				backErr = fmt.Errorf("bench: the last echoes did not arrive within %v", o.Drain)
			}
		case <-ctx.Done():
			_ = echoer.CloseNow()
			_ = writer.CloseNow()
			<-echoDone
			<-backDone
			return res, ctx.Err()
		}
	}
	if err := errors.Join(echoErr, backErr); err != nil {
		res.FirstError = err.Error()
	}
	res.DurationSec = o.Duration.Seconds()
	res.Sent, res.Received, res.Echoed = ws.measured, received, echoed
	if res.Sent > res.Echoed {
		res.Lost = res.Sent - res.Echoed
	}
	res.OneWayUS, res.RoundTripUS = latencyUS(&oneWay), latencyUS(&rtt)
	res.WriterMaxLateUS = float64(ws.maxLate) / 1e3
	_ = writer.Close()
	_ = echoer.Close()
	return res, nil
}

// probeUntil sends probes on wc every syncInterval until ready is closed,
// bounded by syncTimeout.
func probeUntil(ctx context.Context, wc msgConn, ready <-chan struct{}) error {
	var probe [headerSize]byte
	deadline := time.NewTimer(syncTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(syncInterval)
	defer tick.Stop()
	for {
		binary.LittleEndian.PutUint64(probe[0:], uint64(time.Now().UnixNano()))
		binary.LittleEndian.PutUint64(probe[8:], flagProbe)
		if err := wc.WriteMessage(ctx, probe[:]); err != nil {
			return fmt.Errorf("bench: writer: %w", err)
		}
		select {
		case <-ready:
			return nil
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("bench: no echo of a probe within %v", syncTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// latencyUS returns the quantiles of h (nanoseconds) in microseconds.
func latencyUS(h *Histogram) LatencyUS {
	us := func(ns float64) float64 { return ns / 1e3 }
	return LatencyUS{
		P50: us(h.Quantile(0.50)), P90: us(h.Quantile(0.90)), P99: us(h.Quantile(0.99)),
		P999: us(h.Quantile(0.999)), Max: us(float64(h.Max())),
	}
}

// latencyRow formats quantiles for a table.
func latencyRow(l LatencyUS) string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s", us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max))
}

// WriteTable writes r as a human-readable table.
func (r *LatencyResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("scenario", "latency: 1 writer at %g msg/s, 1 reader echoing every message, topic %s", r.Rate, r.Topic)
	row("relay", "%s", r.URL)
	row("message size", "%d B", r.Size)
	row("measured", "%.3f s (after %.3f s warm-up; connect %.3f s)", r.DurationSec, r.WarmupSec, r.ConnectSec)
	row("sent", "%d; reader received %d; writer got %d echoes; lost %d", r.Sent, r.Received, r.Echoed, r.Lost)
	row("one-way µs", "%s", latencyRow(r.OneWayUS))
	row("round trip µs", "%s", latencyRow(r.RoundTripUS))
	row("writer late", "at most %s µs behind schedule", us(r.WriterMaxLateUS))
	if r.FirstError != "" {
		row("first error", "%s", r.FirstError)
	}
	row("client CPU", "%.2f s (warm-up included)", r.ClientCPUSec)
	if r.ServerCPUSec != nil {
		row("server CPU", "%.2f s (%.1f%% of one core, warm-up included)", *r.ServerCPUSec, 100**r.ServerCPUSec/(r.DurationSec+r.WarmupSec))
	}
	if r.ServerPeakRSSBytes != nil {
		row("server peak RSS", "%.1f MiB", float64(*r.ServerPeakRSSBytes)/(1<<20))
	}
	return tw.Flush()
}
