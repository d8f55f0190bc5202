package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
)

// ChildHost is a `switchboard host` child process with a generated
// configuration and its status listener on a loopback port.
type ChildHost struct {
	// PID is the child's process id.
	PID int
	// StatusURL is the base URL of its /status and /metrics.
	StatusURL string
	// Dir holds its configuration and token files; removed by Stop.
	Dir string

	cmd      *exec.Cmd
	exited   chan struct{}
	stopOnce sync.Once
}

// HostLink is the part of a host's link status the benches read.
type HostLink struct {
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Local     *struct {
		Connected *bool `json:"connected"`
	} `json:"local"`
}

// StartHost writes config (YAML, without status_listen) and the given
// files (name → content) to a temporary directory and starts `binary host`
// on it, with its status on a loopback port. Log lines at level WARN and
// above go to stderr. It returns once the status listener is up; the
// caller must call Stop.
func StartHost(ctx context.Context, binary, config string, files map[string]string, stderr io.Writer) (*ChildHost, error) {
	dir, err := os.MkdirTemp("", "switchboard-bench-host-*")
	if err != nil {
		return nil, fmt.Errorf("bench: start host: %w", err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("bench: start host: %w", err)
		}
	}
	cfgPath := filepath.Join(dir, "host.yaml")
	if err := os.WriteFile(cfgPath, []byte(config+"status_listen: 127.0.0.1:0\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start host: %w", err)
	}
	cmd := exec.Command(binary, "host", "--config", cfgPath, "--log-format", "json")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	logs, err := cmd.StderrPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start host: %w", err)
	}
	h := &ChildHost{PID: cmd.Process.Pid, Dir: dir, cmd: cmd, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(logs)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct{ Level, Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				fmt.Fprintln(stderr, sc.Text())
				continue
			}
			if line.Msg == "status listening" {
				addr <- line.Addr
			}
			if line.Level == "WARN" || line.Level == "ERROR" {
				fmt.Fprintln(stderr, "host:", sc.Text())
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(h.exited)
	}()
	select {
	case a := <-addr:
		h.StatusURL = "http://" + a
		return h, nil
	case <-h.exited:
		h.Stop()
		return nil, errors.New("bench: host exited before listening")
	case <-time.After(StartTimeout):
		h.Stop()
		return nil, fmt.Errorf("bench: host did not listen within %v", StartTimeout)
	case <-ctx.Done():
		h.Stop()
		return nil, ctx.Err()
	}
}

// Links returns the host's link status.
func (h *ChildHost) Links(ctx context.Context) ([]HostLink, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.StatusURL+"/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: host status: %w", err)
	}
	defer resp.Body.Close()
	var doc struct{ Links []HostLink }
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, fmt.Errorf("bench: host status: %w", err)
	}
	return doc.Links, nil
}

// WaitUp polls the host's status until every link, and every local side
// that has a connection, is up (bounded by StartTimeout and ctx).
func (h *ChildHost) WaitUp(ctx context.Context) error {
	deadline := time.Now().Add(StartTimeout)
	for {
		links, err := h.Links(ctx)
		up := err == nil && len(links) > 0
		for _, l := range links {
			up = up && l.Connected && (l.Local == nil || l.Local.Connected == nil || *l.Local.Connected)
		}
		if up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: host links not all up within %v: %+v (%v)", StartTimeout, links, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM, waits (killing after StopTimeout) and removes Dir.
func (h *ChildHost) Stop() {
	h.stopOnce.Do(func() {
		defer os.RemoveAll(h.Dir)
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.exited:
		case <-time.After(StopTimeout):
			_ = h.cmd.Process.Kill()
			<-h.exited
		}
	})
}

// relayTopicDrops returns the relay's connections on topic and the drops
// counted on them, from GET /status.
func relayTopicDrops(ctx context.Context, url, statsToken, topic string) (conns int, drops uint64, err error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/status", nil)
	req.Header.Set("Authorization", "Bearer "+statsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: relay status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("bench: relay status: HTTP %d", resp.StatusCode)
	}
	var list []struct {
		Topic string            `json:"topic"`
		Drops map[string]uint64 `json:"drops"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return 0, 0, fmt.Errorf("bench: relay status: %w", err)
	}
	for _, c := range list {
		if c.Topic == topic {
			conns++
			for _, n := range c.Drops {
				drops += n
			}
		}
	}
	return conns, drops, nil
}

// statsToken mints a relay:stats token.
func statsToken(secret []byte, url string) (string, error) {
	return mintToken(secret, url, time.Hour, func(c *auth.Claims) { c.Scopes = []string{auth.ScopeStats} })
}

// waitTopic polls the relay until topic has n connections.
func waitTopic(ctx context.Context, url, stats, topic string, n int) error {
	deadline := time.Now().Add(StartTimeout)
	for {
		got, _, err := relayTopicDrops(ctx, url, stats, topic)
		if err == nil && got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %d connections on %s after %v, want %d (%v)", got, topic, StartTimeout, n, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// HostIdleOptions configure HostIdle.
type HostIdleOptions struct {
	// Binary is the switchboard executable run as "serve" and "host".
	Binary string
	// Streams is how many tcp streams the host runs (default 20).
	Streams int
	// Settle is how long the host idles, all links up, before its memory
	// is read (default 5 s).
	Settle time.Duration
	// ServerArgs are extra arguments of the started server.
	ServerArgs []string
	// Stderr receives the children's warnings.
	Stderr io.Writer
}

// HostIdleResult is the memory of an idle host.
type HostIdleResult struct {
	Streams   int     `json:"streams"`
	RSS       int64   `json:"rss"`      // VmRSS after Settle
	RSSAnon   int64   `json:"rss_anon"` // of which anonymous (heap, stacks)
	RSSFile   int64   `json:"rss_file"` // of which file-backed (the binary's pages)
	PeakRSS   int64   `json:"peak_rss"` // VmHWM
	UpSec     float64 `json:"up_sec"`   // from start until every link was up
	SettleSec float64 `json:"settle_sec"`
}

// HostIdle starts a relay and a host with Streams tcp streams (each to its
// own local listener in this process, each on its own topic), waits until
// every link and local connection is up, lets it idle for Settle and reads
// its resident memory from /proc.
func HostIdle(ctx context.Context, o HostIdleOptions) (HostIdleResult, error) {
	if o.Streams <= 0 {
		o.Streams = 20
	}
	if o.Settle <= 0 {
		o.Settle = 5 * time.Second
	}
	res := HostIdleResult{Streams: o.Streams, SettleSec: o.Settle.Seconds()}
	srv, err := StartServer(ctx, o.Binary, o.ServerArgs, o.Stderr)
	if err != nil {
		return res, err
	}
	defer srv.Stop()
	tok, err := MintToken(srv.Secret, srv.URL, "bench/*", 2*time.Hour)
	if err != nil {
		return res, err
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "url: %s\ntoken_file: token\nstreams:\n", srv.URL)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	accepted := make(chan net.Conn, o.Streams)
	for i := range o.Streams {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		lns = append(lns, ln)
		go func() {
			if c, err := ln.Accept(); err == nil {
				accepted <- c
			}
		}()
		fmt.Fprintf(&cfg, "  - {name: s%d, kind: tcp, topic: bench/idle%d, addr: %s}\n", i, i, ln.Addr())
	}
	start := time.Now()
	host, err := StartHost(ctx, o.Binary, cfg.String(), map[string]string{"token": tok}, o.Stderr)
	if err != nil {
		return res, err
	}
	defer host.Stop()
	for range o.Streams {
		select {
		case c := <-accepted:
			conns = append(conns, c)
		case <-time.After(StartTimeout):
			return res, errors.New("bench: the host did not connect to every local service")
		}
	}
	if err := host.WaitUp(ctx); err != nil {
		return res, err
	}
	res.UpSec = time.Since(start).Seconds()
	select {
	case <-time.After(o.Settle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	if res.RSS, err = ProcRSS(host.PID); err != nil {
		return res, err
	}
	res.PeakRSS, _ = ProcPeakRSS(host.PID)
	res.RSSAnon, _ = procStatusKB(host.PID, "RssAnon:")
	res.RSSFile, _ = procStatusKB(host.PID, "RssFile:")
	return res, nil
}
