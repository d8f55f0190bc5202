package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// syncBuffer is a bytes.Buffer safe for one writer and polling readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run executes one command line with the given stdin and returns stdout and
// the error.
func run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	var out, errOut syncBuffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	cmd := newRootCommand(stdin, &out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// startServe runs `switchboard serve` on a free loopback port with a fresh
// data dir and returns the data dir once the server listens.
func startServe(t *testing.T, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := run(ctx, nil, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir}, extra...)...)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	wait.For(t, "public URL recorded", func() bool {
		u, _ := datadir.ReadPublicURL(dir)
		return u != ""
	})
	return dir
}

func TestServeTokenClient(t *testing.T) {
	dir := startServe(t)
	info, err := os.Stat(filepath.Join(dir, datadir.SecretFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, mode %v", err, info.Mode())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tok, err := run(ctx, nil, "token", "--topic", "demo", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	tok = strings.TrimSpace(tok)
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("token output %q is not a lone JWT", tok)
	}
	tokFile := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o600)
	record := filepath.Join(t.TempDir(), "rec.jsonl")

	// The receiver keeps reading after its (never-ending) stdin.
	recvCtx, stopRecv := context.WithCancel(ctx)
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var recvOut syncBuffer
	recvDone := make(chan error, 1)
	go func() {
		cmd := newRootCommand(stdinR, &recvOut, io.Discard)
		cmd.SetArgs([]string{"client", "--data-dir", dir, "--topic", "demo", "--token-file", tokFile, "--record", record})
		recvDone <- cmd.ExecuteContext(recvCtx)
	}()
	// Until the receiver is connected, probes go unseen; poll until one arrives.
	wait.For(t, "receiver connected", func() bool {
		if _, err := run(ctx, strings.NewReader("probe\n"), "client", "--data-dir", dir, "--topic", "demo", "--token", tok); err != nil {
			t.Fatalf("sender: %v", err)
		}
		return strings.Contains(recvOut.String(), "probe")
	})
	if _, err := run(ctx, strings.NewReader("hello\nworld\n"), "client", "--data-dir", dir, "--topic", "demo", "--token", tok); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "messages printed", func() bool { return strings.HasSuffix(recvOut.String(), "hello\nworld\n") })
	// Binary messages are printed base64-encoded.
	if _, err := run(ctx, strings.NewReader("\x00\x01\x02"), "client", "--data-dir", dir, "--topic", "demo", "--token", tok, "--binary"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "binary printed", func() bool { return strings.HasSuffix(recvOut.String(), "AAEC\n") })
	stopRecv()
	if err := <-recvDone; err != nil {
		t.Fatalf("receiver: %v", err)
	}
	rec, _ := os.ReadFile(record)
	lines := strings.Split(strings.TrimSpace(string(rec)), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, `"type":"binary","data":"AAEC"`) || !strings.Contains(lines[len(lines)-2], `"data":"world"`) {
		t.Fatalf("record file:\n%s", rec)
	}
	stamp := strings.SplitN(strings.TrimPrefix(last, `{"t":"`), `"`, 2)[0]
	if _, err := time.Parse(time.RFC3339Nano, stamp); err != nil || !strings.Contains(stamp, ".") {
		t.Fatalf("record timestamp %q: %v", stamp, err)
	}
}

func TestClientExitCodes(t *testing.T) {
	dir := startServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := run(ctx, nil, "client", "--data-dir", dir, "--topic", "demo", "--token", "not-a-token")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(ee.msg, "token_malformed") {
		t.Fatalf("bad token: %v", err)
	}
	// A token expiring while connected: exit 3 naming the close code.
	tok, _ := run(ctx, nil, "token", "--topic", "demo", "--data-dir", dir, "--ttl", "1s")
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var out syncBuffer
	cmd := newRootCommand(stdinR, &out, io.Discard)
	cmd.SetArgs([]string{"client", "--data-dir", dir, "--topic", "demo", "--token", strings.TrimSpace(tok)})
	err = cmd.ExecuteContext(ctx)
	if !errors.As(err, &ee) || ee.code != 3 || !strings.Contains(ee.msg, "4001") {
		t.Fatalf("expiry: %v", err)
	}
}

func TestTokenNeedsSecretAndTopic(t *testing.T) {
	ctx := context.Background()
	if _, err := run(ctx, nil, "token", "--scopes", "read", "--data-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--topic") {
		t.Fatalf("no topic: %v", err)
	}
	if _, err := run(ctx, nil, "token", "--topic", "x", "--data-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "no secret") {
		t.Fatalf("no secret: %v", err)
	}
	if _, err := run(ctx, nil, "token", "--topic", "a//b", "--secret", "0123456789abcdef"); err == nil {
		t.Fatal("bad topic accepted")
	}
}

func TestEnvironmentTwins(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SWITCHBOARD_SECRET", "0123456789abcdef0123")
	t.Setenv("SWITCHBOARD_AUDIENCE", "https://relay.example")
	t.Setenv("SWITCHBOARD_SCOPES", "read")
	ctx := context.Background()
	tok, err := run(ctx, nil, "token", "--topic", "x", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	// A flag on the command line wins over its twin.
	if _, err := run(ctx, nil, "token", "--topic", "x", "--data-dir", dir, "--secret", "short"); err == nil {
		t.Fatal("command-line --secret did not override SWITCHBOARD_SECRET")
	}
	if envName("max-message") != "SWITCHBOARD_MAX_MESSAGE" {
		t.Fatal(envName("max-message"))
	}
	if strings.TrimSpace(tok) == "" {
		t.Fatal("no token")
	}
}

func TestByteSizeFlag(t *testing.T) {
	for in, want := range map[string]int{"1024": 1024, "8MiB": 8 << 20, "64KiB": 64 << 10, "1MB": 1000000, "2 GiB": 2 << 30} {
		var b byteSize
		if err := b.Set(in); err != nil || int(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1TiB", "abc", "1.5MiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) accepted", in)
		}
	}
	b := byteSize(8 << 20)
	if b.String() != "8MiB" {
		t.Errorf("String() = %q", b.String())
	}
}
