package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest"
)

// TestExampleModuleUsesTheClientAsAnOutsideProgramWould builds
// examples/roundtrip — a module of its own that requires this one, as a user's
// program would — and runs it against a real node: it reads a topic over a
// websocket and publishes to it over HTTP with pkg/client.
func TestExampleModuleUsesTheClientAsAnOutsideProgramWould(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("..", "..", "examples", "roundtrip"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "roundtrip")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = dir
	// The example's own go.mod and go.sum decide, not this module's flags.
	build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example module: %v\n%s", err, out)
	}

	srv := servertest.Start(t)
	token := srv.Token(t, "example/roundtrip", "read", "write")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, bin, "-url", srv.URL, "-topic", "example/roundtrip", "-message", "hello, outside world")
	run.Env = append(os.Environ(), "SWITCHBOARD_TOKEN="+token)
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("example: %v\n%s", err, out)
	}
	for _, want := range []string{"queued for 1 reader(s)", "received: hello, outside world"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("example printed %q; want it to contain %q", out, want)
		}
	}
}
