package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTCPBaselinePaced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := TCPBaseline(ctx, TCPBaselineOptions{
		Readers: 5, Size: 100, Rate: 200, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 59 || res.Sent > 61 {
		t.Errorf("sent %d, want about 60", res.Sent)
	}
	if res.Delivered != res.Sent*5 || res.HubDelivered != res.Sent*5 {
		t.Errorf("delivered %d, hub delivered %d, want sent × readers = %d", res.Delivered, res.HubDelivered, res.Sent*5)
	}
	if res.Drops != 0 || res.HubDropped != 0 || res.Gaps != 0 || res.Reordered != 0 || res.Incomplete != 0 || res.ReaderErrors != 0 {
		t.Errorf("drops %d hub dropped %d gaps %d reordered %d incomplete %d errors %d (%s), want none",
			res.Drops, res.HubDropped, res.Gaps, res.Reordered, res.Incomplete, res.ReaderErrors, res.FirstError)
	}
	if res.DurationSec != 0.3 {
		t.Errorf("duration %v s, want the scheduled 0.3", res.DurationSec)
	}
	l := res.LatencyUS
	if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max && l.Max < 2e6) {
		t.Errorf("latency quantiles not sane: %+v", l)
	}
	if !strings.HasPrefix(res.URL, "tcp://127.0.0.1:") || !res.CPUIncludesHub || res.ServerCPUSec != nil {
		t.Errorf("url %q, cpu includes hub %v, server CPU %v", res.URL, res.CPUIncludesHub, res.ServerCPUSec)
	}

	b, err := json.Marshal(&res)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"scenario":"tcp-baseline"`, `"delivered_per_sec"`, `"latency_us":{"p50"`, `"drops"`, `"hub_dropped"`, `"hub_delivered"`, `"cpu_includes_hub":true`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON lacks %s: %s", field, b)
		}
	}
	if strings.Contains(string(b), `"topic"`) {
		t.Errorf("JSON has a topic: %s", b)
	}
	var sb strings.Builder
	if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "tcp-baseline") || !strings.Contains(sb.String(), "one process") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
}

func TestTCPBaselineUnpacedCountsAgree(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := TCPBaseline(ctx, TCPBaselineOptions{Readers: 3, Size: 64, Duration: 100 * time.Millisecond, Warmup: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 {
		t.Fatal("nothing sent")
	}
	if res.Delivered+res.Drops != res.Sent*3 || res.HubDelivered+res.HubDropped != res.Sent*3 {
		t.Errorf("delivered %d + drops %d, hub %d + %d, want sent %d × 3", res.Delivered, res.Drops, res.HubDelivered, res.HubDropped, res.Sent)
	}
	if res.Reordered != 0 || res.Incomplete != 0 || res.ReaderErrors != 0 {
		t.Errorf("reordered %d incomplete %d errors %d (%s)", res.Reordered, res.Incomplete, res.ReaderErrors, res.FirstError)
	}
}

// A tiny queue forces drops: they must be counted by the hub and match what
// the readers missed, and the stream must still end.
func TestTCPBaselineDropsOldest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const size = 32 << 10
	res, err := TCPBaseline(ctx, TCPBaselineOptions{
		Readers: 4, Size: size, Duration: 200 * time.Millisecond, Warmup: -1,
		QueueBytes: size + BaselineMessageOverhead,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.HubDelivered+res.HubDropped != res.Sent*4 || res.Drops != res.HubDropped || res.Delivered != res.HubDelivered {
		t.Errorf("sent %d × 4: delivered %d (hub %d), drops %d (hub %d)", res.Sent, res.Delivered, res.HubDelivered, res.Drops, res.HubDropped)
	}
	if res.Reordered != 0 || res.Incomplete != 0 || res.ReaderErrors != 0 {
		t.Errorf("reordered %d incomplete %d errors %d (%s)", res.Reordered, res.Incomplete, res.ReaderErrors, res.FirstError)
	}
	t.Logf("sent %d, delivered %d, dropped %d", res.Sent, res.Delivered, res.HubDropped)
	if res.Drops > 0 && res.Gaps == 0 {
		t.Errorf("drops %d but no gaps", res.Drops)
	}
}

// Payloads larger than the readers' 64 KiB buffer take the copying path.
func TestTCPBaselineLargeMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := TCPBaseline(ctx, TCPBaselineOptions{Readers: 2, Size: 100 << 10, Rate: 100, Duration: 100 * time.Millisecond, Warmup: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 || res.Delivered != 2*res.Sent || res.MBPerSec <= 0 {
		t.Errorf("sent %d delivered %d, %v MB/s", res.Sent, res.Delivered, res.MBPerSec)
	}
	if res.Gaps != 0 || res.Incomplete != 0 || res.ReaderErrors != 0 {
		t.Errorf("gaps %d incomplete %d errors %d (%s)", res.Gaps, res.Incomplete, res.ReaderErrors, res.FirstError)
	}
}

func TestTCPBaselineOptionErrors(t *testing.T) {
	for _, o := range []TCPBaselineOptions{
		{Readers: -1}, {Size: 8}, {Rate: -1}, {Size: 1024, QueueBytes: 1000},
	} {
		if _, err := TCPBaseline(context.Background(), o); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
}

// The per-message path of the TCP transport and the readers' accounting
// must not allocate.
func TestTCPConnNoAllocs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	wc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	rc := <-accepted
	if rc == nil {
		t.Fatal("accept failed")
	}
	defer rc.Close()
	const size = 1024
	w := &tcpConn{Conn: wc, frame: make([]byte, 0, frameHeader+size)}
	r := newReader(&tcpConn{Conn: rc, br: bufio.NewReaderSize(rc, baselineReadBuffer)}, 0, 1, new(window))
	var ready atomic.Int64
	payload := make([]byte, size)
	bg := context.Background()
	var seq uint64
	allocs := testing.AllocsPerRun(1000, func() {
		binary.LittleEndian.PutUint64(payload[0:], uint64(time.Now().UnixNano()))
		binary.LittleEndian.PutUint64(payload[8:], seq|flagMeasured)
		seq++
		if err := w.WriteMessage(bg, payload); err != nil {
			t.Fatal(err)
		}
		data, err := r.conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		r.observe(data, &ready)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message, want 0", allocs)
	}
	if r.gaps != 0 || r.reordered != 0 || r.received != seq {
		t.Errorf("received %d of %d, gaps %d, reordered %d", r.received, seq, r.gaps, r.reordered)
	}
}
