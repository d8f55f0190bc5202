package main

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// containerUID is the user the image runs as (the Dockerfile's USER).
const containerUID = 65532

// TestReleaseBinaryIsStaticAndRunsUnprivileged: the Dockerfile's build
// command, run on this machine, makes a static executable that reports
// the release version, serves from a data directory it owns as a
// non-root user, and probes itself with `switchboard healthcheck` (the
// image's HEALTHCHECK). Needs only Go: this is the image's build checked
// where no container builder runs.
func TestReleaseBinaryIsStaticAndRunsUnprivileged(t *testing.T) {
	bin := releaseBuild(t)
	if why := staticELF(bin); why != "" {
		t.Fatalf("the release binary is not static: %s", why)
	}
	if out := runTool(t, "", bin, "version"); !strings.Contains(out, releaseVersion) || !strings.Contains(out, releaseCommit) || !strings.Contains(out, releaseDate) {
		t.Fatalf("switchboard version = %q, want it to name %s, %s and %s (-ldflags -X)", out, releaseVersion, releaseCommit, releaseDate)
	}

	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	// The image's environment, as the Dockerfile sets it, on a free port.
	env := append(os.Environ(), "SWITCHBOARD_LISTEN="+listen, "SWITCHBOARD_DATA_DIR="+dataDir,
		"SWITCHBOARD_LOG_FORMAT=json", "SWITCHBOARD_PUBLIC_URL=http://"+listen)
	serve := exec.Command(bin, "serve")
	serve.Env = env
	var attr *syscall.SysProcAttr
	if os.Geteuid() == 0 {
		// As root, run as the image's user, like the container does.
		if err := os.Chown(dataDir, containerUID, containerUID); err != nil {
			t.Fatal(err)
		}
		for dir := filepath.Dir(dataDir); strings.HasPrefix(dir, os.TempDir()+"/"); dir = filepath.Dir(dir) {
			if err := os.Chmod(dir, 0o755); err != nil { // t.TempDir's are 0700
				t.Fatal(err)
			}
		}
		attr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: containerUID, Gid: containerUID}}
	}
	serve.SysProcAttr = attr
	var logs syncBuffer
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { serve.Wait(); close(exited) }()
	stop := func() {
		serve.Process.Signal(syscall.SIGTERM)
		<-exited
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("serve:\n%s", logs.String())
		}
	})
	probe := func(path string) error {
		cmd := exec.Command(bin, "healthcheck", "--path", path)
		cmd.Env, cmd.SysProcAttr = env, attr
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	wait.Within(t, 30*time.Second, "switchboard healthcheck to pass", func() bool {
		select {
		case <-exited:
			t.Fatalf("serve exited:\n%s", logs.String())
		default:
		}
		return probe("/healthz") == nil
	})
	if err := probe("/readyz"); err != nil {
		t.Fatalf("healthcheck --path /readyz: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "switchboard.db")); err != nil {
		t.Fatalf("the data directory has no database: %v", err)
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(dataDir, "switchboard.db"))
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != containerUID {
			t.Fatalf("switchboard.db is owned by uid %d, want %d (the server runs unprivileged)", uid, containerUID)
		}
	}

	// A stopped node fails the probe: the health check can fail.
	stop()
	if err := probe("/healthz"); err == nil {
		t.Fatal("healthcheck passed with the server stopped")
	}
}

// TestContainerImage builds the Dockerfile with podman, checks the image
// (non-root user, data volume, health check, small), starts it and waits
// for its own HEALTHCHECK to pass.
//
// No image registry is reachable here, so the build stage's Go image is a
// local one the test makes (busybox for the shell, with this machine's Go
// toolchain, module cache and build cache mounted); the Dockerfile is used
// as written with GO_IMAGE pointing at it. On this machine's kernel
// containers run with runc (crun refuses its hybrid cgroups) and explicit
// ulimits (the defaults raise limits the sandbox forbids).
func TestContainerImage(t *testing.T) {
	podman := servertest.Tool(t, "podman", "podman")
	servertest.Tool(t, "runc", "runc")
	busybox := servertest.Tool(t, "busybox-static", "busybox")
	if why := staticELF(busybox); why != "" {
		t.Fatalf("%s is not static (%s): apt-get install busybox-static", busybox, why)
	}
	// Built on the host first: the image build then finds every package in
	// the shared build cache (the command is the same, with -trimpath).
	releaseBuild(t)
	root := moduleRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var rlim syscall.Rlimit
	limits := []string{"--runtime", "runc"}
	for _, l := range []struct {
		name     string
		resource int
		max      uint64
	}{{"nofile", syscall.RLIMIT_NOFILE, 16384}, {"nproc", 6 /* RLIMIT_NPROC */, 8192}} {
		if err := syscall.Getrlimit(l.resource, &rlim); err != nil {
			t.Fatal(err)
		}
		n := min(rlim.Cur, l.max)
		limits = append(limits, "--ulimit", fmt.Sprintf("%s=%d:%d", l.name, n, n))
	}
	pod := func(args ...string) (string, error) {
		ctx := ctx
		if ctx.Err() != nil { // in a cleanup, after the test's context ended
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
		}
		cmd := exec.CommandContext(ctx, podman, append([]string{"--cgroup-manager", "cgroupfs"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	mustPod := func(args ...string) string {
		t.Helper()
		out, err := pod(args...)
		if err != nil {
			t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	suffix := randomSuffix(t)

	// The build stage's base: busybox as /bin/sh and CA certificates.
	goImage := "localhost/switchboard-test-go:" + suffix
	rootfs := filepath.Join(t.TempDir(), "rootfs.tar")
	writeBuildBase(t, rootfs, busybox)
	mustPod("import", "--change", "ENV PATH=/usr/local/go/bin:/bin", "--change", "ENV HOME=/root", rootfs, goImage)
	t.Cleanup(func() { pod("rmi", "-f", goImage) })

	goEnv := func(name string) string {
		out, err := exec.Command("go", "env", name).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	goroot, modcache, buildcache := goEnv("GOROOT"), goEnv("GOMODCACHE"), goEnv("GOCACHE")
	image := "localhost/switchboard-test:" + suffix
	buildArgs := append([]string{"build", "--format", "docker", "--layers=false", "--no-cache"}, limits...)
	buildArgs = append(buildArgs, "--build-arg", "GO_IMAGE="+goImage, "--build-arg", "VERSION="+releaseVersion,
		"--build-arg", "COMMIT="+releaseCommit, "--build-arg", "DATE="+releaseDate,
		"-v", goroot+":/usr/local/go:ro", "-v", modcache+":/root/go/pkg/mod", "-v", buildcache+":/root/.cache/go-build",
		"-t", image, "-f", filepath.Join(root, "Dockerfile"), root)
	mustPod(buildArgs...)
	t.Cleanup(func() { pod("rmi", "-f", image) })

	var inspected []struct {
		Size   int64
		Config struct {
			User    string
			Volumes map[string]struct{}
		}
		HealthCheck struct{ Test []string }
	}
	if err := json.Unmarshal([]byte(mustPod("image", "inspect", image)), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect: %v", err)
	}
	img := inspected[0]
	if u := img.Config.User; u == "" || u == "0" || strings.HasPrefix(u, "root") || strings.HasPrefix(u, "0:") {
		t.Errorf("the image runs as %q, want a non-root user", u)
	}
	if _, ok := img.Config.Volumes["/var/lib/switchboard"]; !ok {
		t.Errorf("the image's volumes are %v, want /var/lib/switchboard", img.Config.Volumes)
	}
	if hc := strings.Join(img.HealthCheck.Test, " "); !strings.Contains(hc, "switchboard healthcheck") {
		t.Errorf("the image's health check is %q, want `switchboard healthcheck`", hc)
	}
	const maxImageBytes = 60 << 20 // a static binary and CA certificates
	if img.Size > maxImageBytes {
		t.Errorf("the image is %d MB, want at most %d MB", img.Size>>20, maxImageBytes>>20)
	}
	if out := mustPod(append(append([]string{"run", "--rm"}, limits...), image, "version")...); !strings.Contains(out, releaseVersion) {
		t.Errorf("switchboard version in the image = %q, want %s", out, releaseVersion)
	}

	// Started as an operator would, with the port published.
	port := freePorts(t, 1)[0]
	name := "switchboard-test-" + suffix
	runArgs := append([]string{"run", "-d", "--name", name}, limits...)
	runArgs = append(runArgs, "-p", fmt.Sprintf("127.0.0.1:%d:8080", port),
		"-e", fmt.Sprintf("SWITCHBOARD_PUBLIC_URL=http://127.0.0.1:%d", port), image)
	mustPod(runArgs...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := pod("logs", name)
			t.Logf("container logs:\n%s", out)
		}
		pod("rm", "-f", "-v", name)
	})
	wait.Within(t, time.Minute, "the image's HEALTHCHECK to pass", func() bool {
		_, err := pod("healthcheck", "run", name)
		return err == nil
	})
	if code := httpStatus(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); code != http.StatusOK {
		t.Fatalf("GET /healthz through the published port: %d", code)
	}
	var state []struct {
		State  struct{ Pid int }
		Mounts []struct{ Source, Destination string }
	}
	if err := json.Unmarshal([]byte(mustPod("container", "inspect", name)), &state); err != nil || len(state) != 1 {
		t.Fatalf("podman container inspect: %v", err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", state[0].State.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" && f[1] != fmt.Sprint(containerUID) {
			t.Errorf("the server runs as uid %s, want %d", f[1], containerUID)
		}
	}
	var volume string
	for _, m := range state[0].Mounts {
		if m.Destination == "/var/lib/switchboard" {
			volume = m.Source
		}
	}
	if volume == "" {
		t.Fatalf("no volume is mounted at /var/lib/switchboard: %+v", state[0].Mounts)
	}
	if _, err := os.Stat(filepath.Join(volume, "switchboard.db")); err != nil {
		t.Fatalf("the data volume has no database: %v", err)
	}
}

// writeBuildBase writes the root file system of the build stage's base
// image: busybox (sh, mkdir, chown, chmod) and this machine's CA
// certificates; Go comes mounted from the host.
func writeBuildBase(t *testing.T, path, busybox string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name, from string, mode int64) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin/", 0o755}, {"etc/", 0o755}, {"etc/ssl/", 0o755}, {"etc/ssl/certs/", 0o755}, {"root/", 0o700}, {"tmp/", 0o1777}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode}); err != nil {
			t.Fatal(err)
		}
	}
	add("bin/busybox", busybox, 0o755)
	for _, applet := range []string{"sh", "mkdir", "chown", "chmod"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777}); err != nil {
			t.Fatal(err)
		}
	}
	add("etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt", 0o644)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// randomSuffix names this run's images and container apart from any
// other's.
func randomSuffix(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
