package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
)

// stopGrace is how long a process has to exit after SIGTERM before it is
// killed, and how long its output is still read after it exits.
const stopGrace = 5 * time.Second

// maxStderrLine bounds one logged line of a process's stderr.
const maxStderrLine = 4 << 10

// execStream runs a process: its stdout becomes binary messages (held,
// slowing the process, while the link is down), messages become its stdin
// (dropped and counted while it is not running), its stderr lines go to
// the log. It is restarted with backoff when it exits.
type execStream struct {
	link  *link
	argv  []string
	env   []string
	dir   string
	chunk int
	relay *relaySlot
	local localSlot
}

func newExecStream(a *Agent, sc *StreamConfig) *execStream {
	e := &execStream{
		link:  a.newLink(sc.Name, sc.Name, sc.Kind, client.DefaultPrefix, sc.Topic, sc.TokenFile, "process"),
		argv:  sc.Command,
		dir:   sc.Dir,
		chunk: sc.Chunk,
		relay: newRelaySlot(),
	}
	// The agent's environment without its own settings (SWITCHBOARD_*,
	// which may hold a token), plus the configured variables.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			e.env = append(e.env, kv)
		}
	}
	keys := make([]string, 0, len(sc.Env))
	for k := range sc.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e.env = append(e.env, k+"="+sc.Env[k])
	}
	return e
}

func (e *execStream) prepare() error { return nil }

func (e *execStream) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		e.link.run(ctx, func(ctx context.Context, c *client.Conn) error {
			e.relay.set(c)
			defer e.relay.clear(c)
			return readRelay(ctx, c, e.link.st, func(_ client.MessageType, data []byte) {
				if !e.local.write(data) {
					e.link.st.drops.Add(1)
				}
			})
		})
	})
	wg.Go(func() { e.runProcess(ctx) })
	wg.Wait()
}

// runProcess starts the process, waits for it and restarts it with backoff.
func (e *execStream) runProcess(ctx context.Context) {
	st, log := e.link.st, e.link.log
	bo := &backoff{p: e.link.a.backoff}
	for ctx.Err() == nil {
		st.localAttempts.Add(1)
		start := time.Now()
		err := e.runOnce(ctx)
		if ctx.Err() != nil {
			st.localDown(nil)
			return
		}
		if err == nil {
			err = errors.New("exited with status 0")
		}
		st.localDown(err)
		bo.done(time.Since(start))
		wait := bo.next()
		log.Warn("process ended", "command", e.argv[0], "error", err, "restart_in", wait)
		if !e.link.a.sleep(ctx, wait) {
			return
		}
	}
}

// runOnce runs the process once, until it exits or ctx ends.
func (e *execStream) runOnce(ctx context.Context) error {
	st, log := e.link.st, e.link.log
	// runCtx ends the output copying of this run: a send still waiting for
	// the link when the process is gone is abandoned.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.argv[0], e.argv[1:]...)
	cmd.Env, cmd.Dir = e.env, e.dir
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	dieWithAgent(cmd.SysProcAttr) // a process left by a crashed agent would be started twice
	cmd.WaitDelay = stopGrace
	cmd.Stdout = &relayWriter{ctx: runCtx, relay: e.relay, st: st, chunk: e.chunk}
	lw := &lineLogger{log: log}
	cmd.Stderr = lw
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := startContained(cmd); err != nil {
		stdin.Close()
		return err
	}
	e.local.set(stdin)
	st.localUpNow()
	log.Info("process started", "command", e.argv[0], "pid", cmd.Process.Pid)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waitErr:
	case <-ctx.Done():
		werr = <-waitErr // cmd.Cancel sends SIGTERM; WaitDelay bounds the rest
	}
	e.local.clear(stdin)
	stdin.Close()
	lw.flush()
	return werr
}

// relayWriter sends a process's output as binary messages of at most chunk
// bytes.
type relayWriter struct {
	ctx   context.Context
	relay *relaySlot
	st    *linkStats
	chunk int
}

func (w *relayWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		m := min(len(p), w.chunk)
		if err := w.relay.send(w.ctx, client.Binary, p[:m]); err != nil {
			return n, err
		}
		w.st.sent(m)
		n += m
		p = p[m:]
	}
	return n, nil
}

// lineLogger logs each line written to it (a process's stderr).
type lineLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxStderrLine - len(l.buf)
			if len(p) < room {
				l.buf = append(l.buf, p...)
				break
			}
			l.buf = append(l.buf, p[:room]...)
			p = p[room:]
			l.emitLocked()
			continue
		}
		l.buf = append(l.buf, p[:i]...)
		p = p[i+1:]
		l.emitLocked()
	}
	return n, nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emitLocked()
	}
}

func (l *lineLogger) emitLocked() {
	line := strings.TrimRight(string(l.buf), "\r")
	if len(line) > maxStderrLine {
		line = line[:maxStderrLine]
	}
	l.log.Info("stderr", "line", line)
	l.buf = l.buf[:0]
}

var _ io.Writer = (*relayWriter)(nil)
