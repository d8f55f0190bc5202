package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/agent"
	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// mainArgsEnv makes the test binary run main() with these arguments
// (separated by \x1f), so tests can run the real program as a child process.
const mainArgsEnv = "SWITCHBOARD_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	agent.GuardMain() // the hosts started here use this binary as their action guard
	if args := os.Getenv(mainArgsEnv); args != "" {
		os.Args = append([]string{"switchboard"}, strings.Split(args, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startChild runs `switchboard serve` as a child process on dataDir and
// waits until it listens.
func startChild(t *testing.T, dataDir string) (*exec.Cmd, string) {
	t.Helper()
	os.Remove(filepath.Join(dataDir, datadir.PublicURLFile))
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "warn"}, "\x1f"))
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, bufio.NewReader(stderr))
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var url string
	wait.For(t, "child server listening", func() bool {
		url, _ = datadir.ReadPublicURL(dataDir)
		return url != ""
	})
	return cmd, url
}

// TestDenialSurvivesKill9: a denial acknowledged with 204 is still in force
// after the server is killed with SIGKILL and started again.
func TestDenialSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	child, url := startChild(t, dir)
	ctx := context.Background()
	admin, err := run(ctx, nil, "token", "--scopes", "relay:admin", "--sub", "op", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	post := func(url, tok string) int {
		req, _ := http.NewRequest("POST", url, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	exp := time.Now().Add(time.Hour).Unix()
	for i := range 20 {
		if st := post(fmt.Sprintf("%s/bids/deny?bid=b%d&exp=%d", url, i, exp), admin); st != 204 {
			t.Fatalf("deny b%d: %d", i, st)
		}
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()

	_, url = startChild(t, dir)
	for i := range 20 {
		tok, _ := run(ctx, nil, "token", "--topic", "lab", "--booking-id", fmt.Sprintf("b%d", i), "--data-dir", dir)
		if st := post(url+"/session/lab", tok); st != 403 {
			t.Fatalf("access for denied b%d after kill -9: %d", i, st)
		}
	}
}

// TestSecondServeOnDataDirRefused: a second `switchboard serve` on a data
// directory that a running one holds exits at once with an error naming the
// holder's pid, instead of sharing its SQLite file and node id (and
// rewriting its recorded public URL).
func TestSecondServeOnDataDirRefused(t *testing.T) {
	dir := t.TempDir()
	child, url := startChild(t, dir)

	second := exec.Command(os.Args[0])
	second.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn"}, "\x1f"))
	var stderr syncBuffer
	second.Stderr = &stderr
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	select {
	case err := <-exited:
		if err == nil {
			t.Fatalf("second serve exited 0; stderr:\n%s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		second.Process.Kill()
		<-exited
		t.Fatalf("second serve on a held data dir kept running; stderr:\n%s", stderr.String())
	}
	if want := fmt.Sprintf("process %d", child.Process.Pid); !strings.Contains(stderr.String(), want) {
		t.Fatalf("second serve's error does not name the holder (%s):\n%s", want, stderr.String())
	}
	if got, _ := datadir.ReadPublicURL(dir); got != url {
		t.Fatalf("recorded public URL rewritten: %q, want %q", got, url)
	}
}
