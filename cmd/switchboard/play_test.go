package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// playEnv is a running relay with the tokens the playback tests use.
type playEnv struct {
	dir, url string
	stats    string // relay:stats token
}

func newPlayEnv(t *testing.T) *playEnv {
	t.Helper()
	dir := startServe(t)
	u, err := datadir.ReadPublicURL(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &playEnv{dir: dir, url: u, stats: playToken(t, dir, "--scopes", "relay:stats")}
}

func playToken(t *testing.T, dir string, args ...string) string {
	t.Helper()
	tok, err := run(context.Background(), nil, append([]string{"token", "--data-dir", dir}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(tok)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// get fetches a control-plane path with the stats token.
func (e *playEnv) get(t *testing.T, path string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.stats)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return body
}

func (e *playEnv) status(t *testing.T) []control.ConnReport {
	t.Helper()
	var conns []control.ConnReport
	if err := json.Unmarshal(e.get(t, "/status"), &conns); err != nil {
		t.Fatal(err)
	}
	return conns
}

// accepted is the relay's count of connections ever accepted, from /metrics.
func (e *playEnv) accepted(t *testing.T) int {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(string(e.get(t, "/metrics"))))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "switchboard_connections_accepted_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatal("no switchboard_connections_accepted_total in /metrics")
	return 0
}

// waitConnected waits until the relay lists a connection with this subject.
func (e *playEnv) waitConnected(t *testing.T, sub string) {
	t.Helper()
	wait.For(t, sub+" registered", func() bool {
		for _, c := range e.status(t) {
			if c.Sub == sub {
				return true
			}
		}
		return false
	})
}

// echo answers every message on topic from its own connection: text
// "ping N" with "pong N", binary with the same bytes. It returns what it
// received, once its connection is registered.
func (e *playEnv) echo(t *testing.T, topic string) (received func() []string) {
	t.Helper()
	tok := playToken(t, e.dir, "--topic", topic, "--sub", "echo")
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := client.Dial(ctx, e.url, topic, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(data))
			mu.Unlock()
			if typ == client.Text {
				data = []byte(strings.Replace(string(data), "ping", "pong", 1))
			}
			if conn.Write(ctx, typ, data) != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		conn.CloseNow()
		<-done
	})
	e.waitConnected(t, "echo")
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// runOut runs one command line and returns stdout, stderr and the error.
func runOut(ctx context.Context, stdin io.Reader, args ...string) (string, string, error) {
	var out, errOut syncBuffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	cmd := newRootCommand(stdin, &out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// unreadable is a stdin that fails the test when read.
type unreadable struct{ t *testing.T }

func (u unreadable) Read([]byte) (int, error) {
	u.t.Error("stdin read with --play")
	return 0, io.EOF
}

// A script asks, waits for each answer from another client, and its
// answers are recorded with timestamps; the client then closes with 1000
// and exits 0.
func TestClientPlayRecord(t *testing.T) {
	e := newPlayEnv(t)
	received := e.echo(t, "lab")
	tokFile := writeFile(t, "tok", playToken(t, e.dir, "--topic", "lab", "--sub", "player")+"\n")
	script := writeFile(t, "ask.play", `# Ask, and wait for each answer.
ping 1
<'^pong 1$',1,10s> ping 2
# The answer to "ping 2" may come during this delay: it still counts.
[20ms]
<'^pong 2$',1,10s> %hex 00 01 02
<'^\x00\x01\x02$',1,10s>
`)
	record := filepath.Join(t.TempDir(), "answers.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	before := time.Now().UTC()
	out, stderr, err := runOut(ctx, unreadable{t}, "client", "--data-dir", e.dir, "--topic", "lab",
		"--token-file", tokFile, "--play", script, "--record", record)
	after := time.Now().UTC()
	if err != nil {
		t.Fatalf("client --play: %v (stderr %q)", err, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr: %q", stderr)
	}
	if out != "pong 1\npong 2\nAAEC\n" {
		t.Errorf("stdout %q", out)
	}
	if got := strings.Join(received(), "|"); got != "ping 1|ping 2|\x00\x01\x02" {
		t.Errorf("echo received %q", got)
	}

	rec, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(rec), "\n"), "\n")
	want := []recordLine{{Type: "text", Data: "pong 1"}, {Type: "text", Data: "pong 2"}, {Type: "binary", Data: "AAEC"}}
	if len(lines) != len(want) {
		t.Fatalf("record:\n%s", rec)
	}
	prev := before
	for i, l := range lines {
		var r recordLine
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("record line %q: %v", l, err)
		}
		at, err := time.Parse(time.RFC3339Nano, r.Time)
		if err != nil || r.Type != want[i].Type || r.Data != want[i].Data {
			t.Fatalf("record line %d: %q (%v), want %+v", i+1, l, err, want[i])
		}
		if at.Before(prev) || at.After(after) || !strings.HasSuffix(r.Time, "Z") {
			t.Fatalf("record line %d at %s: not between %s and %s, in order", i+1, r.Time, prev.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano))
		}
		prev = at
	}

	// The player closed normally: only the echo is left.
	wait.For(t, "player gone", func() bool { return len(e.status(t)) == 1 })
}

// Two scripted clients talk to each other: one waits for the other's
// greeting, and --keep-open keeps the first receiving after its script.
func TestClientPlayBothSides(t *testing.T) {
	e := newPlayEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tokA := playToken(t, e.dir, "--topic", "duo", "--sub", "a")
	tokB := playToken(t, e.dir, "--topic", "duo", "--sub", "b")
	scriptA := writeFile(t, "a.play", "<'^hello from b$',1,20s> \\# hello from a\n")
	scriptB := writeFile(t, "b.play", "hello from b\n<'^# hello',1,20s>\n")

	aCtx, stopA := context.WithCancel(ctx)
	defer stopA()
	var aOut syncBuffer
	aDone := make(chan error, 1)
	go func() {
		cmd := newRootCommand(unreadable{t}, &aOut, io.Discard)
		cmd.SetArgs([]string{"client", "--data-dir", e.dir, "--topic", "duo", "--token", tokA, "--play", scriptA, "--keep-open"})
		aDone <- cmd.ExecuteContext(aCtx)
	}()
	e.waitConnected(t, "a")
	out, stderr, err := runOut(ctx, unreadable{t}, "client", "--data-dir", e.dir, "--topic", "duo", "--token", tokB, "--play", scriptB)
	if err != nil || out != "# hello from a\n" || stderr != "" {
		t.Fatalf("b: %v, stdout %q, stderr %q", err, out, stderr)
	}
	wait.For(t, "a saw b", func() bool { return aOut.String() == "hello from b\n" })
	// a's script is over but it keeps its connection.
	wait.For(t, "b gone", func() bool { return len(e.status(t)) == 1 })
	select {
	case err := <-aDone:
		t.Fatalf("a ended despite --keep-open: %v", err)
	default:
	}
	stopA()
	if err := <-aDone; err != nil {
		t.Fatalf("a: %v", err)
	}
}

// A wait that times out is logged and the script goes on; with
// --play-strict it ends the client with status 4 before the next message.
func TestClientPlayTimeout(t *testing.T) {
	e := newPlayEnv(t)
	received := e.echo(t, "quiet")
	tok := playToken(t, e.dir, "--topic", "quiet", "--sub", "player")
	script := writeFile(t, "t.play", "first\n<'^never$',1,100ms> second\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	_, stderr, err := runOut(ctx, nil, "client", "--data-dir", e.dir, "--topic", "quiet", "--token", tok, "--play", script)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if !strings.Contains(stderr, "switchboard: warning: "+script+":2: timed out after 100ms waiting for 1 message(s) matching '^never$': 0 matched; going on") {
		t.Fatalf("stderr %q", stderr)
	}
	wait.For(t, "both sent", func() bool { return strings.Join(received(), "|") == "first|second" })

	_, _, err = runOut(ctx, nil, "client", "--data-dir", e.dir, "--topic", "quiet", "--token", tok, "--play", script, "--play-strict")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 4 || !strings.Contains(ee.msg, script+":2: timed out") {
		t.Fatalf("strict: %v", err)
	}
	wait.For(t, "strict player gone", func() bool { return len(e.status(t)) == 1 })
	// Whatever the strict player sent is queued for the echo before this
	// sentinel, which is sent once the player is gone.
	if _, err := run(ctx, strings.NewReader("sentinel\n"), "client", "--data-dir", e.dir, "--topic", "quiet", "--token", tok); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "sentinel", func() bool { return strings.HasSuffix(strings.Join(received(), "|"), "sentinel") })
	if got := strings.Join(received(), "|"); got != "first|second|first|sentinel" {
		t.Fatalf("echo received %q: the strict client went on after the timeout", got)
	}

	if _, err := run(ctx, nil, "client", "--data-dir", e.dir, "--topic", "quiet", "--token", tok, "--play-strict"); err == nil || !strings.Contains(err.Error(), "--play-strict needs --play") {
		t.Fatalf("--play-strict alone: %v", err)
	}
}

// A malformed script is refused naming its lines, before the client even
// connects: the relay accepts no connection and a listener gets nothing.
func TestClientPlayMalformed(t *testing.T) {
	e := newPlayEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	listener, err := client.Dial(ctx, e.url, "lab", playToken(t, e.dir, "--topic", "lab", "--scopes", "read", "--sub", "listener"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.CloseNow()
	e.waitConnected(t, "listener")
	acceptedBefore := e.accepted(t)

	tok := playToken(t, e.dir, "--topic", "lab")
	script := writeFile(t, "bad.play", "hello\n[1s] fine so far\n# comment\n[5 parsecs] x\n<'(',1,1s>\n")
	record := filepath.Join(t.TempDir(), "rec.jsonl")
	_, _, err = runOut(ctx, nil, "client", "--data-dir", e.dir, "--topic", "lab", "--token", tok, "--play", script, "--record", record)
	var ee *exitError
	if err == nil || errors.As(err, &ee) {
		t.Fatalf("malformed script: %v; want a plain error (status 1)", err)
	}
	want := script + ":4: bad duration \"5 parsecs\" in [5 parsecs]\n" + script + ":5:3: bad regex '(': error parsing regexp: missing closing ): `(`"
	if err.Error() != want {
		t.Fatalf("error:\n%s\nwant:\n%s", err, want)
	}
	if _, err := os.Stat(record); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record file created for a malformed script: %v", err)
	}
	// The client never connected, so nothing can still be on its way.
	if n := e.accepted(t); n != acceptedBefore {
		t.Fatalf("relay accepted %d connections during the malformed run", n-acceptedBefore)
	}
	conns := e.status(t)
	if len(conns) != 1 || conns[0].Sub != "listener" || conns[0].MessagesOut != 0 || conns[0].MessagesIn != 0 {
		t.Fatalf("status after the malformed run: %+v", conns)
	}

	if _, err := run(ctx, nil, "client", "--data-dir", e.dir, "--topic", "lab", "--token", tok, "--play", filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "--play: open") {
		t.Fatalf("missing script: %v", err)
	}
}
