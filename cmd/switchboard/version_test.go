package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/buildinfo"
)

// TestVersionCommand: `switchboard version` prints the build's version,
// commit, date and Go version, and --json the same as an object.
func TestVersionCommand(t *testing.T) {
	info := buildinfo.Get()
	out, err := run(context.Background(), nil, "version")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"switchboard " + info.Version + "\n", "commit: " + info.Commit + "\n", "built: " + info.Date + "\n", "go: " + info.GoVersion + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("version printed %q, want a line %q", out, want)
		}
	}
	out, err = run(context.Background(), nil, "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got buildinfo.Info
	if err := json.Unmarshal([]byte(out), &got); err != nil || got != info {
		t.Errorf("version --json: %q (%v), want %+v", out, err, info)
	}
}
