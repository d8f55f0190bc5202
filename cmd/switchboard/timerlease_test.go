package main

import (
	"context"
	"strings"
	"testing"
)

// The job timer lease's flags are validated before the node starts: a
// renewal that is not shorter than the lease would let the lease lapse
// between renewals of a live holder.
func TestServeTimerLeaseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--job-timer-lease-ttl", "3s", "--job-timer-lease-renew", "3s"}, "--job-timer-lease-renew 3s must be shorter than --job-timer-lease-ttl 3s"},
		{[]string{"--job-timer-lease-ttl", "3s", "--job-timer-lease-renew", "5s"}, "must be shorter than --job-timer-lease-ttl"},
		{[]string{"--job-timer-lease-ttl", "0s"}, "--job-timer-lease-ttl 0s: want a positive duration"},
		{[]string{"--job-timer-lease-renew", "-1s"}, "--job-timer-lease-renew -1s: want a positive duration"},
	} {
		args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, tc.args...)
		_, err := run(context.Background(), nil, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
	// Valid values start a node (and its lease loop with them).
	startServe(t, "--job-timer-lease-ttl", "3s", "--job-timer-lease-renew", "1s")
	startServe(t, "--job-timer-lease-ttl", "2s") // renew: a third of it
}
