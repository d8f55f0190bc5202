package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Access baseline: this machine's floor for admitting connections. A plain
// net/http server whose only handler upgrades every websocket request
// (coder/websocket's Accept, as the relay uses) with no token, no limits and
// no relay behind it, and reads until the client closes. Access with
// AccessOptions.Baseline drives it with the one-step client loop (connect →
// upgrade → close, the same bytes as a one-step connect), so that the
// relay's one-step and two-step rates can be stated as ratios to it.

// baselineBearerToken stands in for a token in the baseline's handshakes:
// the client sends the same subprotocol header as a one-step connect, and
// the baseline does not look at it.
const baselineBearerToken = "baseline.no-auth.token"

// AccessBaselineHandler upgrades every request to a websocket, selecting
// wire.Subprotocol when the client offers it, and reads (discarding) until
// the client closes; the close handshake is answered by the library.
func AccessBaselineHandler() http.Handler {
	opts := &websocket.AcceptOptions{Subprotocols: []string{wire.Subprotocol}, CompressionMode: websocket.CompressionDisabled}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, opts)
		if err != nil {
			return // Accept has answered
		}
		defer c.CloseNow()
		for {
			if _, _, err := c.Read(r.Context()); err != nil {
				return
			}
		}
	})
}

// ServeAccessBaseline serves AccessBaselineHandler on ln until ctx ends.
func ServeAccessBaseline(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: AccessBaselineHandler(), ReadHeaderTimeout: accessOpTimeout}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = srv.Close()
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// BaselineChild is a child process serving the access baseline (the
// switchboard command's hidden `bench access-baseline-server`), so that its
// CPU time is measured apart from the bench's.
type BaselineChild struct {
	URL string // http://127.0.0.1:port
	PID int

	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error // set before exited is closed
	stopOnce sync.Once
}

// StartAccessBaseline runs `binary args...`, which must print the
// baseline's URL as its first line on stdout and serve until SIGTERM, and
// waits (bounded by StartTimeout and ctx) for that line. The caller must
// call Stop.
func StartAccessBaseline(ctx context.Context, binary string, args []string, stderr io.Writer) (*BaselineChild, error) {
	cmd := exec.Command(binary, args...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: start baseline: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start baseline: %w", err)
	}
	b := &BaselineChild{PID: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{})}
	line := make(chan string, 1)
	go func() {
		br := bufio.NewReader(out)
		s, _ := br.ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, br)
		b.waitErr = cmd.Wait()
		close(b.exited)
	}()
	t := time.NewTimer(StartTimeout)
	defer t.Stop()
	select {
	case u := <-line:
		if CheckLoopbackURL(u) != nil {
			b.Stop()
			return nil, fmt.Errorf("bench: baseline printed %q, want its loopback URL", u)
		}
		b.URL = u
		return b, nil
	case <-t.C:
		b.Stop()
		return nil, fmt.Errorf("bench: baseline did not listen within %v", StartTimeout)
	case <-ctx.Done():
		b.Stop()
		return nil, ctx.Err()
	}
}

// Stop sends SIGTERM and waits for the child to exit, killing it after
// StopTimeout. It is safe to call more than once.
func (b *BaselineChild) Stop() {
	b.stopOnce.Do(func() {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(StopTimeout)
		defer t.Stop()
		select {
		case <-b.exited:
		case <-t.C:
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
	})
}

// RunAccessBaselineServer is the child's side: listen on a loopback port,
// print the URL on out, serve until ctx ends.
func RunAccessBaselineServer(ctx context.Context, out io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(out, "http://%s\n", ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	if f, ok := out.(*os.File); ok {
		_ = f.Sync()
	}
	return ServeAccessBaseline(ctx, ln)
}

// AccessComparison is a baseline run and a relay run with the same client
// options, one after the other.
type AccessComparison struct {
	Baseline AccessResult `json:"baseline"`
	Relay    AccessResult `json:"relay"`
	// Ratio is the relay's exchanges per second over the baseline's.
	Ratio float64 `json:"ratio"`
	// ServerCPURatio is the relay's server CPU per exchange over the
	// baseline's, when both were measured.
	ServerCPURatio *float64 `json:"server_cpu_ratio,omitempty"`
}

// CompareAccess fills in the ratios of c.Relay to c.Baseline.
func CompareAccess(baseline, relay AccessResult) (AccessComparison, error) {
	c := AccessComparison{Baseline: baseline, Relay: relay}
	if baseline.ExchangesPerSec <= 0 {
		return c, errors.New("bench: the baseline completed no exchange")
	}
	c.Ratio = relay.ExchangesPerSec / baseline.ExchangesPerSec
	if b, r := baseline.serverCPUPerExchange(), relay.serverCPUPerExchange(); b > 0 && r > 0 {
		v := r / b
		c.ServerCPURatio = &v
	}
	return c, nil
}

// serverCPUPerExchange is the server's CPU seconds per exchange, 0 if not
// measured.
func (r *AccessResult) serverCPUPerExchange() float64 {
	if r.ServerCPUSec == nil || r.Exchanges == 0 {
		return 0
	}
	return *r.ServerCPUSec / float64(r.Exchanges)
}

// WriteTable writes both runs and the ratios.
func (c *AccessComparison) WriteTable(w io.Writer) error {
	if err := c.Baseline.WriteTable(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := c.Relay.WriteTable(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s / baseline\t%.2f × the exchanges per second (%.0f / %.0f)\n", c.Relay.Flow, c.Ratio, c.Relay.ExchangesPerSec, c.Baseline.ExchangesPerSec)
	if c.ServerCPURatio != nil {
		fmt.Fprintf(tw, "server CPU per exchange\t%.2f × the baseline's (%.0f µs / %.0f µs)\n", *c.ServerCPURatio, 1e6*c.Relay.serverCPUPerExchange(), 1e6*c.Baseline.serverCPUPerExchange())
	}
	return tw.Flush()
}
