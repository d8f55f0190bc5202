package main

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/servertest"
)

// Helpers of the tests of what deploy/ and the Dockerfile ship: the
// repository's root, the release binary built as the Dockerfile builds it,
// and Go programs (helm, kubeconform, nfpm) installed at pinned versions.

// moduleRoot is the module's root directory.
func moduleRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// dockerfileBuild is the Dockerfile's build of the binary: its `RUN go
// build` line, and the variables its ENV line sets for it.
type dockerfileBuild struct {
	command string   // the shell command, as written
	env     []string // NAME=value of the build stage's ENV
}

var dockerfileGoBuild = regexp.MustCompile(`^RUN (go build .*-o /out/switchboard \./cmd/switchboard)$`)

// readDockerfileBuild reads the build command and environment from the
// Dockerfile, so that the tests build exactly what the image holds.
func readDockerfileBuild(t testing.TB) dockerfileBuild {
	t.Helper()
	f, err := os.Open(filepath.Join(moduleRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b dockerfileBuild
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := dockerfileGoBuild.FindStringSubmatch(line); m != nil {
			b.command = m[1]
		}
		if rest, ok := strings.CutPrefix(line, "ENV CGO_ENABLED="); ok && b.env == nil {
			b.env = strings.Fields("CGO_ENABLED=" + rest)
		}
	}
	if b.command == "" || b.env == nil {
		t.Fatalf("Dockerfile: no `RUN go build … -o /out/switchboard ./cmd/switchboard` line or no `ENV CGO_ENABLED=…` line")
	}
	return b
}

// The VERSION, COMMIT and DATE the tests build with: the binary must
// report them.
const (
	releaseVersion = "v0.0.0-deploytest"
	releaseCommit  = "0123456789abcdef0123456789abcdef01234567"
	releaseDate    = "2026-01-02T03:04:05Z"
)

var releaseBinary struct {
	once sync.Once
	path string
	err  string
}

// releaseBuild returns the binary built on this machine by the
// Dockerfile's own build command and environment (once per test process):
// what the image, the .deb and the .rpm ship.
func releaseBuild(t testing.TB) string {
	t.Helper()
	b := readDockerfileBuild(t)
	releaseBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "switchboard-release-")
		if err != nil {
			releaseBinary.err = err.Error()
			return
		}
		// Readable by all: the tests run it as an unprivileged user too.
		if err := os.Chmod(dir, 0o755); err != nil {
			releaseBinary.err = err.Error()
			return
		}
		releaseBinary.path = filepath.Join(dir, "switchboard")
		command := strings.Replace(b.command, "/out/switchboard", releaseBinary.path, 1)
		cmd := exec.Command("sh", "-c", command)
		cmd.Dir = moduleRoot(t)
		cmd.Env = append(append(os.Environ(), b.env...), "VERSION="+releaseVersion, "COMMIT="+releaseCommit, "DATE="+releaseDate)
		if out, err := cmd.CombinedOutput(); err != nil {
			releaseBinary.err = "the Dockerfile's build command: " + err.Error() + "\n" + string(out)
		}
	})
	if releaseBinary.err != "" {
		t.Fatal(releaseBinary.err)
	}
	return releaseBinary.path
}

// staticELF reports why the file at path is not a static executable, or
// "" if it is one: no program interpreter and no shared library needed.
func staticELF(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "it names a program interpreter (dynamically linked)"
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		return "it needs shared libraries " + strings.Join(libs, ", ")
	}
	return ""
}

// goTool returns the program name (nfpm, helm, kubeconform) at the
// version deploy/tools.txt pins, installed with `go install` into a cache
// directory of its own (kept across runs:
// ~/.cache/switchboard-test-tools/NAME@VERSION, where
// deploy/install-tools.sh puts it too). When it cannot be installed (no
// module proxy) the test is skipped, or fails under
// SWITCHBOARD_TEST_STRICT=1.
func goTool(t testing.TB, name string) string {
	t.Helper()
	pkg, version := pinnedTool(t, name)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "switchboard-test-tools", name+"@"+version)
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "install", pkg+"@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := "go install " + pkg + "@" + version + ": " + err.Error() + "\n" + string(out)
		if os.Getenv(servertest.EnvStrict) == "1" {
			t.Fatal(msg + servertest.EnvStrict + "=1 forbids skipping")
		}
		t.Skip(msg + "(set " + servertest.EnvStrict + "=1 to fail instead)")
	}
	return bin
}

// pinnedTool returns the package and version of a program in
// deploy/tools.txt.
func pinnedTool(t testing.TB, name string) (pkg, version string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), "deploy", "tools.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(f[0], "#") && filepath.Base(f[0]) == name {
			return f[0], f[1]
		}
	}
	t.Fatalf("deploy/tools.txt pins no %s", name)
	return "", ""
}

// runTool runs a program and fails the test with its output if it fails.
func runTool(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}
