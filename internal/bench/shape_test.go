package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Several topics, each with several writers: every reader gets every
// message of its topic's writers and none of the others'.
func TestFanoutTopicsWriters(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Fanout(ctx, FanoutOptions{
		URL: srv.PublicURL(), Secret: secret, Topics: 3, Writers: 2, Readers: 2, Size: 100,
		Rate: 200, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 6 writers × 200 msg/s × 300 ms: 360 messages (±1 per writer).
	if res.Sent < 354 || res.Sent > 366 {
		t.Errorf("sent %d, want about 360", res.Sent)
	}
	if res.Delivered != res.Sent*2 {
		t.Errorf("delivered %d, want sent × readers per topic = %d", res.Delivered, res.Sent*2)
	}
	if res.Drops != 0 || res.Gaps != 0 || res.Reordered != 0 || res.Incomplete != 0 || res.ReaderErrors != 0 {
		t.Errorf("drops %d gaps %d reordered %d incomplete %d errors %d (%s), want none",
			res.Drops, res.Gaps, res.Reordered, res.Incomplete, res.ReaderErrors, res.FirstError)
	}
	if res.WriterMaxLateUS == nil {
		t.Error("paced run without writer_max_late_us")
	}
	b, _ := json.Marshal(&res)
	for _, field := range []string{`"writers":2`, `"topics":3`, `"readers":2`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON lacks %s: %s", field, b)
		}
	}
	var sb strings.Builder
	if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "3 topics × (2 writers → 2 readers)") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
}

func TestFanoutShapeErrors(t *testing.T) {
	for _, o := range []FanoutOptions{{Writers: -1}, {Topics: -2}, {Writers: MaxWriters + 1}} {
		o.URL, o.Secret = "http://127.0.0.1:1", []byte("x")
		if _, err := Fanout(context.Background(), o); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
	if got := FanoutTopics("a", 1); len(got) != 1 || got[0] != "a" {
		t.Errorf("FanoutTopics(a, 1) = %v", got)
	}
	if got := FanoutTopics("a", 3); strings.Join(got, " ") != "a/0 a/1 a/2" {
		t.Errorf("FanoutTopics(a, 3) = %v", got)
	}
}

func TestTCPBaselineTopicsWriters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := TCPBaseline(ctx, TCPBaselineOptions{
		Topics: 4, Writers: 3, Readers: 2, Size: 64, Duration: 100 * time.Millisecond, Warmup: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 || res.Delivered+res.Drops != res.Sent*2 || res.HubDelivered+res.HubDropped != res.Sent*2 {
		t.Errorf("sent %d × 2: delivered %d + drops %d, hub %d + %d", res.Sent, res.Delivered, res.Drops, res.HubDelivered, res.HubDropped)
	}
	if res.Reordered != 0 || res.Incomplete != 0 || res.ReaderErrors != 0 {
		t.Errorf("reordered %d incomplete %d errors %d (%s)", res.Reordered, res.Incomplete, res.ReaderErrors, res.FirstError)
	}
	if res.Writers != 3 || res.Topics != 4 {
		t.Errorf("writers %d topics %d", res.Writers, res.Topics)
	}
}

// A reader keeps one sequence per writer and ends when every writer has.
func TestReaderSeveralWriters(t *testing.T) {
	r := newReader(nil, 0, 2, new(window))
	var ready atomic.Int64
	msg := func(w uint64) []byte {
		b := make([]byte, headerSize)
		binary.LittleEndian.PutUint64(b, uint64(time.Now().UnixNano()))
		binary.LittleEndian.PutUint64(b[8:], w)
		return b
	}
	w1 := uint64(1) << writerShift
	steps := []struct {
		w    uint64
		done bool
	}{
		{flagProbe, false},
		{0 | flagMeasured, false},
		{w1 | 0 | flagMeasured, false},
		{w1 | 1 | flagMeasured, false},
		{1 | flagMeasured, false},
		{3 | flagMeasured, false},      // writer 0 skips 2: one gap
		{w1 | 1 | flagMeasured, false}, // writer 1 repeats 1: reordered
		{5 << writerShift, false},      // not a writer of this topic: ignored
		{flagEnd | 4, false},           // writer 0 sent 4: no further gap
		{flagEnd | w1 | 3, true},       // writer 1 sent 3: one more gap, and the end
	}
	for i, s := range steps {
		if done := r.observe(msg(s.w), &ready); done != s.done {
			t.Fatalf("step %d: done %v, want %v", i, done, s.done)
		}
	}
	if ready.Load() != 1 || r.received != 5 || r.gaps != 2 || r.reordered != 1 || !r.complete {
		t.Errorf("ready %d received %d gaps %d reordered %d complete %v", ready.Load(), r.received, r.gaps, r.reordered, r.complete)
	}
}

// A reader counts the data messages it receives while the clock is inside
// the measured window, whichever window they were sent in.
func TestReaderCountsWhatArrivesInTheWindow(t *testing.T) {
	var ready atomic.Int64
	msg := func(w uint64) []byte {
		b := make([]byte, headerSize)
		binary.LittleEndian.PutUint64(b, uint64(time.Now().Add(-time.Hour).UnixNano())) // sent long ago
		binary.LittleEndian.PutUint64(b[8:], w)
		return b
	}
	now := time.Now()
	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     uint64
	}{
		{"inside", now.Add(-time.Minute), now.Add(time.Minute), 3},
		{"over", now.Add(-2 * time.Minute), now.Add(-time.Minute), 0},
		{"not yet", now.Add(time.Minute), now.Add(2 * time.Minute), 0},
	} {
		var w window
		w.from.Store(tc.from.UnixNano())
		w.to.Store(tc.to.UnixNano())
		r := newReader(nil, 0, 1, &w)
		for _, m := range []uint64{flagProbe, 0, 1 | flagMeasured, 2 | flagMeasured, 5 << writerShift, flagEnd | 3} {
			r.observe(msg(m), &ready)
		}
		if r.inWindow != tc.want {
			t.Errorf("%s: %d counted in the window, want %d", tc.name, r.inWindow, tc.want)
		}
	}
}
