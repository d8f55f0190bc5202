package bench

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Defaults of the host benches.
const (
	DefaultHostTCPBytes = 256 << 20
	DefaultHostChunk    = 32 << 10
	// hostIdleTimeout ends a reader that has received nothing for this long
	// after the writer finished (the rest was lost).
	hostIdleTimeout = 3 * time.Second
	hostTopic       = "bench/host-tcp"
)

// HostTCPOptions configure HostTCP.
type HostTCPOptions struct {
	// Binary is the switchboard executable run as "serve" and "host".
	Binary string
	// Bytes is how much the local source sends (default 256 MiB).
	Bytes int64
	// Chunk is the host stream's chunk: the largest message (default 32 KiB).
	Chunk int
	// Rate paces the source in MB/s (1 MB = 1e6 bytes); 0 is unpaced.
	Rate float64
	// ServerArgs are extra arguments of the started server.
	ServerArgs []string
	// Stderr receives the children's warnings.
	Stderr io.Writer
}

// HostTCPResult is what HostTCP measured.
type HostTCPResult struct {
	Bytes          int64   `json:"bytes"`    // sent by the source
	Received       int64   `json:"received"` // by the reader
	Messages       int64   `json:"messages"` // received
	Seconds        float64 `json:"seconds"`  // first byte sent to last byte received
	MBps           float64 `json:"mb_per_sec"`
	Rate           float64 `json:"rate_mb_per_sec,omitempty"`
	Chunk          int     `json:"chunk"`
	Intact         bool    `json:"intact"` // the SHA-256 of what arrived is the source's
	SHA256         string  `json:"sha256"`
	RelayDrops     uint64  `json:"relay_drops"` // counted by the relay on the topic
	HostCPUSec     float64 `json:"host_cpu_sec"`
	ServerCPUSec   float64 `json:"server_cpu_sec"`
	HostPeakRSS    int64   `json:"host_peak_rss"`
	ServerPeakRSS  int64   `json:"server_peak_rss"`
	HostIdleRSS    int64   `json:"host_idle_rss"` // before the transfer
	ServerIdleRSS  int64   `json:"server_idle_rss"`
	LostOrDamaged  string  `json:"problem,omitempty"`
	ReaderStoppedE string  `json:"reader_error,omitempty"`
}

// HostTCP measures the tcp stream of `switchboard host` through the relay:
// a local TCP source → the host (a child process) → the relay (a child
// process) → a reader in this process that hashes what arrives. The relay
// drops messages for a reader that falls more than its send queue behind
// (policy drop); Rate paces the source to find what keeps the data intact.
func HostTCP(ctx context.Context, o HostTCPOptions) (HostTCPResult, error) {
	if o.Bytes <= 0 {
		o.Bytes = DefaultHostTCPBytes
	}
	if o.Chunk <= 0 {
		o.Chunk = DefaultHostChunk
	}
	res := HostTCPResult{Bytes: o.Bytes, Chunk: o.Chunk, Rate: o.Rate}
	srv, err := StartServer(ctx, o.Binary, o.ServerArgs, o.Stderr)
	if err != nil {
		return res, err
	}
	defer srv.Stop()
	tok, err := MintToken(srv.Secret, srv.URL, hostTopic, 2*time.Hour)
	if err != nil {
		return res, err
	}
	stats, err := statsToken(srv.Secret, srv.URL)
	if err != nil {
		return res, err
	}
	source, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer source.Close()
	reader, err := client.Dial(ctx, srv.URL, hostTopic, tok, &client.Options{ReadLimit: -1})
	if err != nil {
		return res, fmt.Errorf("bench: reader: %w", err)
	}
	defer reader.CloseNow()
	host, err := StartHost(ctx, o.Binary, fmt.Sprintf("url: %s\ntoken_file: token\nstreams:\n  - {name: tcp, kind: tcp, topic: %s, addr: %s, chunk: %d}\n",
		srv.URL, hostTopic, source.Addr(), o.Chunk), map[string]string{"token": tok}, o.Stderr)
	if err != nil {
		return res, err
	}
	defer host.Stop()
	conn, err := acceptWithin(source, StartTimeout)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	if err := host.WaitUp(ctx); err != nil {
		return res, err
	}
	if err := waitTopic(ctx, srv.URL, stats, hostTopic, 2); err != nil {
		return res, err
	}
	res.HostIdleRSS, _ = ProcRSS(host.PID)
	res.ServerIdleRSS, _ = ProcRSS(srv.PID)
	hostCPU0, _ := ProcCPU(host.PID)
	srvCPU0, _ := ProcCPU(srv.PID)

	type readResult struct {
		n, msgs int64
		sum     []byte
		last    time.Time
		err     error
	}
	writerDone := make(chan struct{})
	rc := make(chan readResult, 1)
	go func() {
		h := sha256.New()
		var r readResult
		var buf []byte
		for r.n < o.Bytes {
			timeout := 10 * time.Minute
			select {
			case <-writerDone:
				timeout = hostIdleTimeout
			default:
			}
			rctx, cancel := context.WithTimeout(ctx, timeout)
			_, data, err := reader.ReadInto(rctx, buf)
			cancel()
			if err != nil {
				r.err = err
				break
			}
			buf = data
			h.Write(data)
			r.n += int64(len(data))
			r.msgs++
			r.last = time.Now()
		}
		r.sum = h.Sum(nil)
		rc <- r
	}()

	// The relay forgets a connection's drops when it closes: sample them
	// while the reader is connected.
	var drops atomic.Uint64
	pollCtx, stopPoll := context.WithCancel(ctx)
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			if _, d, err := relayTopicDrops(pollCtx, srv.URL, stats, hostTopic); err == nil && d > drops.Load() {
				drops.Store(d)
			}
			select {
			case <-pollCtx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	sum, werr := writeStream(ctx, conn, o.Bytes, o.Rate, start)
	close(writerDone)
	r := <-rc
	if _, d, err := relayTopicDrops(ctx, srv.URL, stats, hostTopic); err == nil && d > drops.Load() && r.err == nil {
		drops.Store(d)
	}
	stopPoll()
	<-pollDone
	res.RelayDrops = drops.Load()
	if werr != nil {
		return res, werr
	}
	hostCPU1, _ := ProcCPU(host.PID)
	srvCPU1, _ := ProcCPU(srv.PID)
	res.HostCPUSec, res.ServerCPUSec = (hostCPU1 - hostCPU0).Seconds(), (srvCPU1 - srvCPU0).Seconds()
	res.HostPeakRSS, _ = ProcPeakRSS(host.PID)
	res.ServerPeakRSS, _ = ProcPeakRSS(srv.PID)
	host.Stop() // before the source closes, which the host would report
	res.Received, res.Messages = r.n, r.msgs
	if !r.last.IsZero() {
		res.Seconds = r.last.Sub(start).Seconds()
		res.MBps = float64(r.n) / 1e6 / res.Seconds
	}
	res.SHA256 = hex.EncodeToString(sum)
	res.Intact = r.n == o.Bytes && string(r.sum) == string(sum)
	if r.err != nil {
		res.ReaderStoppedE = r.err.Error()
	}
	switch {
	case res.Intact:
	case r.n < o.Bytes:
		res.LostOrDamaged = fmt.Sprintf("%d bytes lost", o.Bytes-r.n)
	default:
		res.LostOrDamaged = "the hash differs"
	}
	return res, nil
}

// WriteTable prints the result for people.
func (r *HostTCPResult) WriteTable(w io.Writer) error {
	rate := "unpaced"
	if r.Rate > 0 {
		rate = fmt.Sprintf("paced at %.0f MB/s", r.Rate)
	}
	verdict := "intact (SHA-256 matches)"
	if !r.Intact {
		verdict = "NOT intact: " + r.LostOrDamaged
	}
	_, err := fmt.Fprintf(w, `scenario      local TCP source → host tcp stream (chunk %d) → relay → reader; %s
transfer      %d bytes in %d messages, %.2f s: %.1f MB/s
integrity     %s; relay drops on the topic: %d
CPU           host %.2f s, relay %.2f s
memory        host RSS idle %.1f MiB, peak %.1f MiB; relay idle %.1f MiB, peak %.1f MiB
`, r.Chunk, rate, r.Received, r.Messages, r.Seconds, r.MBps, verdict, r.RelayDrops,
		r.HostCPUSec, r.ServerCPUSec, mib(r.HostIdleRSS), mib(r.HostPeakRSS), mib(r.ServerIdleRSS), mib(r.ServerPeakRSS))
	return err
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// writeStream writes n bytes of the bench's stream to w, paced at rate MB/s
// from start if rate > 0, and returns their SHA-256.
func writeStream(ctx context.Context, w io.Writer, n int64, rate float64, start time.Time) ([]byte, error) {
	g := newStreamGen(1)
	h := sha256.New()
	for sent := int64(0); sent < n; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		blk := g.next()
		blk = blk[:min(int64(len(blk)), n-sent)]
		h.Write(blk)
		if _, err := w.Write(blk); err != nil {
			return nil, fmt.Errorf("bench: source write: %w", err)
		}
		sent += int64(len(blk))
		if rate > 0 {
			due := start.Add(time.Duration(float64(sent) / (rate * 1e6) * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
	}
	return h.Sum(nil), nil
}

// streamGen makes the benches' byte streams: pseudo-random 1 MiB blocks in
// which every 4 KiB page starts with its index, so that a lost, repeated or
// reordered page changes the hash.
type streamGen struct {
	base, blk []byte
	page      uint64
}

const genBlock, genPage = 1 << 20, 4 << 10

func newStreamGen(seed uint64) *streamGen {
	g := &streamGen{base: make([]byte, genBlock), blk: make([]byte, genBlock)}
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 42})
	r.Read(g.base)
	return g
}

func (g *streamGen) next() []byte {
	copy(g.blk, g.base)
	for off := 0; off < genBlock; off += genPage {
		binary.BigEndian.PutUint64(g.blk[off:], g.page)
		g.page++
	}
	return g.blk
}

// streamHash returns the SHA-256 of the first n bytes of stream seed.
func streamHash(seed uint64, n int64) []byte {
	g := newStreamGen(seed)
	h := sha256.New()
	for done := int64(0); done < n; {
		b := g.next()
		b = b[:min(int64(len(b)), n-done)]
		h.Write(b)
		done += int64(len(b))
	}
	return h.Sum(nil)
}

func acceptWithin(ln net.Listener, d time.Duration) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-time.After(d):
		ln.Close()
		return nil, errors.New("bench: the host did not connect to the local service")
	}
}
