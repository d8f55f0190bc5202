package main

import (
	"slices"
	"testing"
)

// TestBenchServerArgsFollowSize: a bench's own server accepts the bench's
// messages (practable-sized 10 MiB ones too) unless --server-arg sets
// --max-message itself.
func TestBenchServerArgsFollowSize(t *testing.T) {
	for _, tc := range []struct {
		args []string
		size int
		want []string
	}{
		{nil, 1 << 10, nil},
		{nil, 1 << 20, nil},
		{nil, 10 << 20, []string{"--max-message=10485760"}},
		{[]string{"--send-queue=64MiB"}, 10 << 20, []string{"--send-queue=64MiB", "--max-message=10485760"}},
		{[]string{"--max-message=16MiB"}, 10 << 20, []string{"--max-message=16MiB"}},
		{[]string{"--max-message", "16MiB"}, 10 << 20, []string{"--max-message", "16MiB"}},
	} {
		if got := serverArgsFor(tc.args, tc.size); !slices.Equal(got, tc.want) {
			t.Errorf("serverArgsFor(%q, %d) = %q, want %q", tc.args, tc.size, got, tc.want)
		}
	}
}
