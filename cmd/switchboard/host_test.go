package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/agent"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// child is the test binary running main() with some arguments as a
// separate process (see TestMain).
type child struct {
	cmd         *exec.Cmd
	stdin       io.WriteCloser
	out, errOut *syncBuffer
	exited      chan struct{}
}

// startMain starts `switchboard args…` as a child process, killed at the end
// of the test. SWITCHBOARD_* settings of the test's environment are not
// passed on.
func startMain(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, mainArgsEnv+"="+strings.Join(args, "\x1f"))
	c := &child{cmd: cmd, out: &syncBuffer{}, errOut: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.errOut
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], c.errOut.String())
			if out := c.out.String(); out != "" {
				t.Logf("%s stdout:\n%s", args[0], out)
			}
		}
	})
	return c
}

// logAttr returns attribute key of the first JSON log line with message
// msg, or "".
func (c *child) logAttr(msg, key string) string {
	sc := bufio.NewScanner(strings.NewReader(c.errOut.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
			s, _ := line[key].(string)
			return s
		}
	}
	return ""
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// hostEnv is a relay child process on a fixed port (so that it can be
// killed and started again at the same address) and a host child process.
type hostEnv struct {
	dir, listen, url string
	serve            *child
	host             *child
	status           string // the host's status URL
}

func (e *hostEnv) startServe(t *testing.T) {
	os.Remove(filepath.Join(e.dir, datadir.PublicURLFile))
	e.serve = startMain(t, "serve", "--listen", e.listen, "--data-dir", e.dir, "--log-level", "warn")
	wait.For(t, "relay listening", func() bool {
		u, _ := datadir.ReadPublicURL(e.dir)
		e.url = u
		return u != ""
	})
}

func (e *hostEnv) token(t *testing.T, args ...string) string {
	t.Helper()
	tok, err := run(context.Background(), nil, append([]string{"token", "--data-dir", e.dir, "--ttl", "2h"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "tok", tok)
}

// links returns the host's status.
func (e *hostEnv) links(t *testing.T) map[string]agent.LinkStatus {
	t.Helper()
	resp, err := http.Get(e.status)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct{ Links []agent.LinkStatus }
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]agent.LinkStatus{}
	for _, l := range doc.Links {
		out[l.Name] = l
	}
	return out
}

// relayConns counts the relay's connections on topic.
func (e *hostEnv) relayConns(t *testing.T, statsTok, topic string) int {
	req, _ := http.NewRequest("GET", e.url+"/status", nil)
	tok, _ := os.ReadFile(statsTok)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var conns []control.ConnReport
	json.NewDecoder(resp.Body).Decode(&conns)
	n := 0
	for _, c := range conns {
		if c.Topic == topic {
			n++
		}
	}
	return n
}

// TestHostEndToEnd runs serve, host and clients as separate processes:
// each stream kind carries data both ways; then the relay is killed with
// SIGKILL and started again on the same port and data directory, every
// link comes back by itself, and each kind carries data again.
func TestHostEndToEnd(t *testing.T) {
	e := &hostEnv{dir: t.TempDir(), listen: freePort(t)}
	e.startServe(t)
	sessionTok := e.token(t, "--topic", "lab/*")
	statsTok := e.token(t, "--scopes", "relay:stats")
	hostShellTok := e.token(t, "--topic", "lab/ssh", "--prefix", "shell", "--scopes", "host")
	userShellTok := e.token(t, "--topic", "lab/ssh", "--prefix", "shell", "--scopes", "client")

	// The local services beside the host: a controller on TCP and an
	// echo service for shell sessions.
	ctlLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ctlLn.Close()
	sshLn, _ := net.Listen("tcp", "127.0.0.1:0")
	defer sshLn.Close()
	go func() {
		for {
			c, err := sshLn.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	catPath, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("cat not found")
	}
	cfg := writeFile(t, "host.yaml", fmt.Sprintf(`
url: %s
token_file: %s
status_listen: 127.0.0.1:0
streams:
  - {name: ctl, kind: tcp, topic: lab/ctl, addr: %s}
  - name: cams
    kind: http-push
    listen: 127.0.0.1:0
    chunk: 4KiB
    feeds:
      - {name: video0, topic: lab/video0}
  - {name: echo, kind: exec, topic: lab/echo, command: [%s]}
  - {name: ssh, kind: shell, topic: lab/ssh, addr: %s, token_file: %s}
`, e.url, sessionTok, ctlLn.Addr(), catPath, sshLn.Addr(), hostShellTok))
	e.host = startMain(t, "host", "--config", cfg, "--log-format", "json")
	var pushAddr string
	wait.For(t, "host listening", func() bool {
		s, p := e.host.logAttr("status listening", "addr"), e.host.logAttr("http-push listening", "addr")
		e.status, pushAddr = "http://"+s+"/status", p
		return s != "" && p != ""
	})
	allUp := func(minReconnects int64) func() bool {
		return func() bool {
			links := e.links(t)
			for _, name := range []string{"ctl", "cams/video0", "echo", "ssh"} {
				l := links[name]
				if !l.Connected || l.Reconnects < minReconnects || (l.Local != nil && l.Local.Connected != nil && !*l.Local.Connected) {
					return false
				}
			}
			return len(links) == 4
		}
	}
	wait.For(t, "every link up", allUp(0))
	ctl := acceptOne(t, ctlLn)

	check := func(round string) {
		t.Run("tcp "+round, func(t *testing.T) {
			c := startMain(t, "client", "--url", e.url, "--topic", "lab/ctl", "--token-file", sessionTok, "--binary", "--keep-open")
			wait.For(t, "client on the topic", func() bool { return e.relayConns(t, statsTok, "lab/ctl") == 2 })
			ctl.Write([]byte("position 42\n"))
			wait.For(t, "service → client", func() bool { return c.out.String() == "position 42\n" })
			c.stdin.Write([]byte("move 7\n"))
			buf := make([]byte, 7)
			ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(ctl, buf); err != nil || string(buf) != "move 7\n" {
				t.Fatalf("client → service: %q %v", buf, err)
			}
		})
		t.Run("http-push "+round, func(t *testing.T) {
			rec := filepath.Join(t.TempDir(), "rec.jsonl")
			startMain(t, "client", "--url", e.url, "--topic", "lab/video0", "--token-file", sessionTok, "--record", rec, "--keep-open")
			wait.For(t, "client on the topic", func() bool { return e.relayConns(t, statsTok, "lab/video0") == 2 })
			body := tsLike(300)
			pr, pw := io.Pipe()
			go func() { // as ffmpeg does: chunked, in writes that split packets
				for p := body; len(p) > 0; {
					n := min(len(p), 1316+100)
					pw.Write(p[:n])
					p = p[n:]
				}
				pw.Close()
			}()
			req, _ := http.NewRequest("POST", "http://"+pushAddr+"/ts/video0", pr)
			req.Header.Set("Content-Type", "video/mp2t")
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				t.Fatalf("push: %v %v", resp, err)
			}
			var got []byte
			wait.For(t, "every packet recorded", func() bool {
				got = nil
				b, _ := os.ReadFile(rec)
				for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
					var r struct{ Type, Data string }
					if json.Unmarshal([]byte(line), &r) != nil {
						continue
					}
					m, _ := base64.StdEncoding.DecodeString(r.Data)
					if len(m)%188 != 0 || len(m) > 4096 || r.Type != "binary" {
						t.Fatalf("message of %d bytes (%s)", len(m), r.Type)
					}
					got = append(got, m...)
				}
				return len(got) >= len(body)
			})
			if !bytes.Equal(got, body) {
				t.Fatal("pushed bytes differ")
			}
		})
		t.Run("exec "+round, func(t *testing.T) {
			c := startMain(t, "client", "--url", e.url, "--topic", "lab/echo", "--token-file", sessionTok, "--binary", "--keep-open")
			wait.For(t, "client on the topic", func() bool { return e.relayConns(t, statsTok, "lab/echo") == 2 })
			c.stdin.Write([]byte("through cat\n"))
			wait.For(t, "echo from the process", func() bool { return c.out.String() == "through cat\n" })
		})
		t.Run("shell "+round, func(t *testing.T) {
			c := startMain(t, "client", "--shell", "--url", e.url, "--topic", "lab/ssh", "--token-file", userShellTok)
			c.stdin.Write([]byte("SSH-2.0-test\r\n\x00\xff"))
			wait.For(t, "echo through the session", func() bool { return c.out.String() == "SSH-2.0-test\r\n\x00\xff" })
			c.stdin.Close()
			select {
			case <-c.exited:
				if code := c.cmd.ProcessState.ExitCode(); code != 0 {
					t.Fatalf("client --shell exited with %d: %s", code, c.errOut.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("client --shell did not end with its stdin")
			}
		})
	}
	check("first")

	e.serve.cmd.Process.Signal(syscall.SIGKILL)
	<-e.serve.exited
	wait.For(t, "every link down", func() bool {
		for _, l := range e.links(t) {
			if l.Connected {
				return false
			}
		}
		return true
	})
	e.startServe(t)
	// The agent's backoff may have grown to a few seconds during the outage.
	wait.Within(t, time.Minute, "every link up after the relay's restart", allUp(1))
	check("after kill -9")
	if l := e.links(t)["ctl"]; l.Local == nil || l.Local.Attempts != 1 {
		t.Errorf("the local connection was re-dialled during the relay's outage: %+v", l.Local)
	}
}

func acceptOne(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			ch <- c
		}
	}()
	select {
	case c := <-ch:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the host did not connect to the local service")
	}
	return nil
}

// tsLike returns n MPEG-TS-like packets: sync byte 0x47, a counter, filler.
func tsLike(n int) []byte {
	b := make([]byte, n*188)
	for i := range n {
		p := b[i*188 : (i+1)*188]
		p[0], p[1], p[2], p[3] = 0x47, byte(i>>8), byte(i), 0x10|byte(i&15)
		for j := 4; j < 188; j++ {
			p[j] = byte(i + j)
		}
	}
	return b
}

// TestHostRefusesBadConfig: an invalid configuration stops the host before
// it starts, naming the key.
func TestHostRefusesBadConfig(t *testing.T) {
	tok := writeFile(t, "tok", "a.b.c")
	cfg := writeFile(t, "host.yaml", "url: http://127.0.0.1:1\ntoken_file: "+tok+"\nstreams:\n  - {name: a, kind: udp, topic: t}\n  - {name: b, kind: tcp, topic: t, addr: nowhere}\n")
	_, err := run(context.Background(), nil, "host", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), `streams[0].kind (line 4): unknown kind "udp"`) || !strings.Contains(err.Error(), "streams[1].addr") {
		t.Fatalf("bad config: %v", err)
	}
	_, err = run(context.Background(), nil, "host", "--url", "http://127.0.0.1:1", "--token-file", tok, "--topic", "a//b", "--tcp", "127.0.0.1:9000")
	if err == nil || !strings.Contains(err.Error(), "--topic:") {
		t.Fatalf("quick form, bad topic: %v", err)
	}
	_, err = run(context.Background(), nil, "host", "--config", cfg, "--tcp", "127.0.0.1:9000")
	if err == nil || !strings.Contains(err.Error(), "quick form") {
		t.Fatalf("--config with --tcp: %v", err)
	}
	_, err = run(context.Background(), nil, "host")
	if err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("no configuration: %v", err)
	}
	// A busy http-push port refuses the start.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	busy := writeFile(t, "busy.yaml", fmt.Sprintf("url: http://127.0.0.1:1\ntoken_file: %s\nstreams:\n  - {name: c, kind: http-push, listen: %s, feeds: [{name: v, topic: t}]}\n", tok, ln.Addr()))
	_, err = run(context.Background(), nil, "host", "--config", busy, "--log-level", "error")
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("busy listener: %v", err)
	}
}

// TestHostQuickFormStops: the quick form runs until its context ends
// (SIGINT or SIGTERM in the real program) and stops cleanly.
func TestHostQuickFormStops(t *testing.T) {
	dir := startServe(t)
	tok := writeFile(t, "tok", mustRun(t, "token", "--data-dir", dir, "--topic", "lab/x"))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	c := startMain(t, "host", "--url", defaultPublicURL(dir), "--token-file", tok, "--topic", "lab/x", "--tcp", ln.Addr().String(), "--log-format", "json")
	acceptOne(t, ln)
	wait.For(t, "link connected", func() bool { return c.logAttr("link connected", "topic") == "lab/x" })
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		if code := c.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("exit status %d", code)
		}
		if c.logAttr("host agent stopped", "level") != "INFO" {
			t.Fatalf("no clean stop:\n%s", c.errOut.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("host did not stop on SIGTERM")
	}
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(context.Background(), nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
