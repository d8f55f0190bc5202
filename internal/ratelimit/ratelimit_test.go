package ratelimit

import (
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestLimiterBurstThenRate(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := New[string](2, 4, clk.now)
	for i := range 4 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d of the burst of 4 refused", i+1)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("fifth request: ok=%v wait=%v, want refused with 500ms (rate 2/s)", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key shares the first key's bucket")
	}
	clk.t = clk.t.Add(500 * time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refused after the refill of one token")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("allowed a second request after the refill of one token")
	}
}

func TestLimiterSweepsFullBuckets(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := New[int](10, 10, clk.now) // refills completely in 1 s
	for k := range 100 {
		l.Allow(k)
	}
	clk.t = clk.t.Add(2 * time.Second)
	l.Allow(-1)
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d buckets after every other key refilled, want 1", n)
	}
}

func TestRetryAfter(t *testing.T) {
	for wait, want := range map[time.Duration]string{0: "1", time.Millisecond: "1", time.Second: "1", 1001 * time.Millisecond: "2", 90 * time.Second: "90"} {
		if got := RetryAfter(wait); got != want {
			t.Errorf("RetryAfter(%v) = %s, want %s", wait, got, want)
		}
	}
}
