package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Defaults of HostShell.
const (
	DefaultShellSessions = 50
	DefaultShellBytes    = 10 << 20
	shellTopic           = "bench/shell"
)

// HostShellOptions configure HostShell.
type HostShellOptions struct {
	// Binary is the switchboard executable run as "serve" and "host".
	Binary string
	// Sessions is how many sessions run at once (default 50).
	Sessions int
	// Bytes is what each session sends, and gets back (default 10 MiB).
	Bytes int64
	// ServerArgs are extra arguments of the started server.
	ServerArgs []string
	// Stderr receives the children's warnings.
	Stderr io.Writer
}

// HostShellResult is what HostShell measured.
type HostShellResult struct {
	Sessions     int     `json:"sessions"`
	Intact       int     `json:"intact"` // sessions whose echo matched byte for byte
	Failed       int     `json:"failed"`
	FirstError   string  `json:"first_error,omitempty"`
	BytesEach    int64   `json:"bytes_each"` // each way
	Seconds      float64 `json:"seconds"`    // from the first dial to the last session's end
	MBps         float64 `json:"mb_per_sec"` // all sessions, one way
	SessionP50   float64 `json:"session_p50_sec"`
	SessionMax   float64 `json:"session_max_sec"`
	HostCPUSec   float64 `json:"host_cpu_sec"`
	ServerCPUSec float64 `json:"server_cpu_sec"`
	HostPeakRSS  int64   `json:"host_peak_rss"`
	ServerPeak   int64   `json:"server_peak_rss"`
}

// HostShell measures 1:1 shell sessions through the relay: Sessions users
// at once each open a session (prefix shell, scope client) to a host (a
// child process) whose shell stream dials an echo service in this
// process; each user sends Bytes of its own pseudo-random stream and checks
// that exactly those bytes come back.
func HostShell(ctx context.Context, o HostShellOptions) (HostShellResult, error) {
	if o.Sessions <= 0 {
		o.Sessions = DefaultShellSessions
	}
	if o.Bytes <= 0 {
		o.Bytes = DefaultShellBytes
	}
	res := HostShellResult{Sessions: o.Sessions, BytesEach: o.Bytes}
	srv, err := StartServer(ctx, o.Binary, o.ServerArgs, o.Stderr)
	if err != nil {
		return res, err
	}
	defer srv.Stop()
	shellToken := func(scope string) (string, error) {
		return mintToken(srv.Secret, srv.URL, 2*time.Hour, func(c *auth.Claims) {
			c.Topic, c.Prefix, c.Scopes = shellTopic, wire.PrefixShell, []string{scope}
		})
	}
	hostTok, err := shellToken(auth.ScopeHost)
	if err != nil {
		return res, err
	}
	userTok, err := shellToken(auth.ScopeClient)
	if err != nil {
		return res, err
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	host, err := StartHost(ctx, o.Binary, fmt.Sprintf("url: %s\ntoken_file: token\nstreams:\n  - {name: shell, kind: shell, topic: %s, addr: %s, max_sessions: %d}\n",
		srv.URL, shellTopic, echo.Addr(), o.Sessions), map[string]string{"token": hostTok}, o.Stderr)
	if err != nil {
		return res, err
	}
	defer host.Stop()
	if err := host.WaitUp(ctx); err != nil {
		return res, err
	}
	hostCPU0, _ := ProcCPU(host.PID)
	srvCPU0, _ := ProcCPU(srv.PID)

	var (
		mu        sync.Mutex
		durations []float64
	)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range o.Sessions {
		wg.Go(func() {
			t0 := time.Now()
			err := shellSession(ctx, srv.URL, userTok, uint64(i+1), o.Bytes)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed++
				if res.FirstError == "" {
					res.FirstError = fmt.Sprintf("session %d: %v", i, err)
				}
				return
			}
			res.Intact++
			durations = append(durations, time.Since(t0).Seconds())
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.MBps = float64(int64(res.Intact)*o.Bytes) / 1e6 / res.Seconds
	slices.Sort(durations)
	if n := len(durations); n > 0 {
		res.SessionP50, res.SessionMax = durations[n/2], durations[n-1]
	}
	hostCPU1, _ := ProcCPU(host.PID)
	srvCPU1, _ := ProcCPU(srv.PID)
	res.HostCPUSec, res.ServerCPUSec = (hostCPU1 - hostCPU0).Seconds(), (srvCPU1 - srvCPU0).Seconds()
	res.HostPeakRSS, _ = ProcPeakRSS(host.PID)
	res.ServerPeak, _ = ProcPeakRSS(srv.PID)
	return res, nil
}

// shellSession opens one session, sends n bytes of stream seed and checks
// the echo.
func shellSession(ctx context.Context, url, token string, seed uint64, n int64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// The host may still be registering; a refusal is retried briefly.
	var c *client.Conn
	var err error
	for try := 0; try < 50; try++ {
		if c, err = client.Dial(ctx, url, shellTopic, token, &client.Options{Prefix: wire.PrefixShell, ReadLimit: -1}); err == nil {
			break
		}
		var ae *client.AccessError
		if !errors.As(err, &ae) || ae.Status != 503 {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer c.CloseNow()
	werr := make(chan error, 1)
	go func() {
		g := newStreamGen(seed)
		for sent := int64(0); sent < n; {
			blk := g.next()
			blk = blk[:min(int64(len(blk)), n-sent)]
			for p := blk; len(p) > 0; {
				m := min(len(p), DefaultHostChunk)
				if err := c.Write(ctx, client.Binary, p[:m]); err != nil {
					werr <- err
					return
				}
				p = p[m:]
			}
			sent += int64(len(blk))
		}
		werr <- nil
	}()
	h := sha256.New()
	var buf []byte
	for got := int64(0); got < n; {
		_, data, err := c.ReadInto(ctx, buf)
		if err != nil {
			return fmt.Errorf("read after %d of %d bytes: %w", got, n, err)
		}
		buf = data
		h.Write(data)
		got += int64(len(data))
		if got > n {
			return fmt.Errorf("%d bytes came back, %d sent", got, n)
		}
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(h.Sum(nil), streamHash(seed, n)) {
		return errors.New("the bytes that came back differ")
	}
	return c.Close()
}

// WriteTable prints the result for people.
func (r *HostShellResult) WriteTable(w io.Writer) error {
	verdict := "every byte correct"
	if r.Failed > 0 {
		verdict = fmt.Sprintf("%d FAILED, first: %s", r.Failed, r.FirstError)
	}
	_, err := fmt.Fprintf(w, `scenario      %d concurrent shell sessions through host and relay to an echo service, %d bytes each way each
result        %d of %d intact; %s
transfer      %.2f s: %.1f MB/s one way, all sessions (the same again back); per session p50 %.2f s, max %.2f s
CPU           host %.2f s, relay %.2f s
memory        host peak RSS %.1f MiB; relay peak %.1f MiB
`, r.Sessions, r.BytesEach, r.Intact, r.Sessions, verdict, r.Seconds, r.MBps, r.SessionP50, r.SessionMax,
		r.HostCPUSec, r.ServerCPUSec, mib(r.HostPeakRSS), mib(r.ServerPeak))
	return err
}
