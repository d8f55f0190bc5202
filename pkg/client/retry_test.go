package client

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// TestRetryDelay: the wait is Retry-After, or a doubling backoff without
// one, capped, plus up to a quarter more (the jitter).
func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		n                    int
		retryAfter, maxDelay time.Duration
		jitter               float64
		want                 time.Duration
	}{
		{0, 0, time.Minute, 0, retryFirstDelay},
		{2, 0, time.Minute, 0, 4 * retryFirstDelay},
		{2, 0, time.Minute, 0.5, 4*retryFirstDelay + retryFirstDelay/2},
		{1, 3 * time.Second, time.Minute, 0, 3 * time.Second},
		{1, 3 * time.Second, time.Second, 0.99, time.Second + time.Duration(0.99*float64(time.Second/4))},
		{60, 0, 10 * time.Second, 0, 10 * time.Second}, // no overflow
	} {
		if got := retryDelay(tc.n, tc.retryAfter, tc.maxDelay, tc.jitter); got != tc.want {
			t.Errorf("retryDelay(%d, %v, %v, %v) = %v, want %v", tc.n, tc.retryAfter, tc.maxDelay, tc.jitter, got, tc.want)
		}
	}
}

// TestParseRetryAfter: seconds or an HTTP date; nothing usable is 0.
func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "5": 5 * time.Second, "0": 0, "-3": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestRetryOptions: zero values are the defaults, negative Retries none.
func TestRetryOptions(t *testing.T) {
	var none *Options
	if none.retries() != DefaultRetries || none.retryMaxDelay() != DefaultRetryMaxDelay {
		t.Fatal("nil Options: not the defaults")
	}
	if (&Options{Retries: -1}).retries() != 0 || (&Options{Retries: 7}).retries() != 7 {
		t.Fatal("Retries: negative must mean none, positive itself")
	}
}

// TestRetryableRefusals: 429 and 503 are retried, but not the refusals a
// wait of seconds does not cure, nor other statuses.
func TestRetryableRefusals(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&AccessError{Status: 429, Code: wire.ErrorRateLimited}, true},
		{&AccessError{Status: 503, Code: wire.ErrorOverloaded}, true},
		{&AccessError{Status: 503}, true}, // a proxy's, without a code
		{&AccessError{Status: 429, Code: wire.ErrorTooManyConnections}, false},
		{&AccessError{Status: 503, Code: wire.ErrorHostUnavailable}, false},
		{&AccessError{Status: 401, Code: wire.ErrorTokenExpired}, false},
		{errors.New("dial tcp: refused"), false},
	} {
		if _, got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
