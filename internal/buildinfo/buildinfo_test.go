package buildinfo

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/switchboard-hub/switchboard", Version: "v1.2.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := fromBuildInfo(bi, "", "", "")
	want := Info{Version: "v1.2.0", Commit: "abc123+dirty", Date: "2026-12-01T10:00:00Z", GoVersion: "go1.26.0"}
	if got != want {
		t.Errorf("from build info: got %+v, want %+v", got, want)
	}
	// The linker's values win.
	got = fromBuildInfo(bi, "v9.9.9", "def456", "2027-01-01T00:00:00Z")
	want = Info{Version: "v9.9.9", Commit: "def456", Date: "2027-01-01T00:00:00Z", GoVersion: "go1.26.0"}
	if got != want {
		t.Errorf("with -ldflags: got %+v, want %+v", got, want)
	}
	// A checkout build without VCS stamping.
	got = fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "", "", "")
	want = Info{Version: DevVersion, Commit: Unknown, Date: Unknown, GoVersion: runtime.Version()}
	if got != want {
		t.Errorf("devel: got %+v, want %+v", got, want)
	}
	if got := fromBuildInfo(nil, "", "", ""); got != want {
		t.Errorf("no build info: got %+v, want %+v", got, want)
	}
}

// TestLdflagsOverride builds a program with -ldflags -X on this package's
// variables, as a release build does, and checks that Get reports them.
func TestLdflagsOverride(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	const p = "github.com/switchboard-hub/switchboard/internal/buildinfo."
	bin := filepath.Join(dir, "prog")
	cmd := exec.Command("go", "build", "-o", bin, "-ldflags", "-X "+p+"version=v1.2.3 -X "+p+"commit=c0ffee -X "+p+"date=2026-12-03T00:00:00Z", "./testdata/printinfo")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), "v1.2.3 c0ffee 2026-12-03T00:00:00Z"; got != want {
		t.Errorf("built with -ldflags -X: got %q, want %q", got, want)
	}
}
