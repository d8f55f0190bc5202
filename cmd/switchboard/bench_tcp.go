package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-hub/switchboard/internal/bench"
)

func newBenchTCPCommand(io stdio) *cobra.Command {
	o := bench.HostTCPOptions{}
	var (
		size, chunk byteSize
		asJSON      bool
	)
	size, chunk = bench.DefaultHostTCPBytes, bench.DefaultHostChunk
	cmd := &cobra.Command{
		Use:   "tcp",
		Short: "Bulk transfer through a host tcp stream and the relay, checked by SHA-256",
		Long: `Starts a relay and a "switchboard host" (child processes of this binary) with
one tcp stream whose local service is a source in this process; a reader in
this process connects to the stream's topic. The source sends --bytes of a
pseudo-random stream as fast as it can (or at --rate MB/s); the reader hashes
what arrives. Reported: MB/s from the first byte sent to the last received
(1 MB = 1e6 bytes), whether the SHA-256 matches, the relay's drop counters on
the topic (a reader that falls more than the relay's send queue behind loses
messages under --slow-consumer drop), the CPU time and memory of host and
relay.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: find own binary: %w", err)
			}
			o.Binary, o.Bytes, o.Chunk, o.Stderr = exe, int64(size), int(chunk), io.err
			res, err := bench.HostTCP(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				err = json.NewEncoder(io.out).Encode(&res)
			} else {
				err = res.WriteTable(io.out)
			}
			if err == nil && !res.Intact {
				return &exitError{code: 1, msg: "bench tcp: the data did not arrive intact: " + res.LostOrDamaged}
			}
			return err
		},
	}
	fs := cmd.Flags()
	fs.Var(&size, "bytes", "bytes the source sends")
	fs.Var(&chunk, "chunk", "the host stream's chunk (largest message)")
	fs.Float64Var(&o.Rate, "rate", 0, "pace the source at this many MB/s (0: unpaced)")
	fs.StringSliceVar(&o.ServerArgs, "server-arg", nil, "extra argument for the started server (repeatable)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of a table")
	return cmd
}

func newBenchHostIdleCommand(io stdio) *cobra.Command {
	var (
		o      bench.HostIdleOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "host-idle",
		Short: "Resident memory of a host with many idle streams",
		Long: `Starts a relay and a "switchboard host" (child processes of this binary) with
--streams tcp streams, each to its own local listener in this process and its
own topic, waits until every link and local connection is up, lets it idle
for --settle and reads the host's resident set size (VmRSS, and the peak
VmHWM) from /proc.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: find own binary: %w", err)
			}
			o.Binary, o.Stderr = exe, io.err
			res, err := bench.HostIdle(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(io.out).Encode(&res)
			}
			_, err = fmt.Fprintf(io.out, "host with %d idle tcp streams: RSS %.1f MiB (anonymous %.1f, file-backed %.1f; peak %.1f) after %.0f s idle; all links up in %.2f s\n",
				res.Streams, float64(res.RSS)/(1<<20), float64(res.RSSAnon)/(1<<20), float64(res.RSSFile)/(1<<20), float64(res.PeakRSS)/(1<<20), res.SettleSec, res.UpSec)
			return err
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&o.Streams, "streams", 20, "tcp streams")
	fs.DurationVar(&o.Settle, "settle", 5*time.Second, "idle time before the memory is read")
	fs.StringSliceVar(&o.ServerArgs, "server-arg", nil, "extra argument for the started server (repeatable)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newBenchShellCommand(io stdio) *cobra.Command {
	var (
		o      bench.HostShellOptions
		size   byteSize
		asJSON bool
	)
	size = bench.DefaultShellBytes
	cmd := &cobra.Command{
		Use:   "shell",
		Short: "Concurrent 1:1 shell sessions through a host and the relay, every byte checked",
		Long: `Starts a relay and a "switchboard host" (child processes of this binary) with
a shell stream whose local service is an echo server in this process. Then
--sessions users open sessions at once; each sends --bytes of its own
pseudo-random stream and checks, by SHA-256, that exactly those bytes come
back. Reported: intact sessions, aggregate MB/s one way (1 MB = 1e6 bytes),
per-session durations, CPU time and peak memory of host and relay. Exits 1
if any session failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: find own binary: %w", err)
			}
			o.Binary, o.Bytes, o.Stderr = exe, int64(size), io.err
			res, err := bench.HostShell(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				err = json.NewEncoder(io.out).Encode(&res)
			} else {
				err = res.WriteTable(io.out)
			}
			if err == nil && res.Failed > 0 {
				return &exitError{code: 1, msg: "bench shell: " + res.FirstError}
			}
			return err
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&o.Sessions, "sessions", bench.DefaultShellSessions, "concurrent sessions")
	fs.Var(&size, "bytes", "bytes each session sends (and gets back)")
	fs.StringSliceVar(&o.ServerArgs, "server-arg", nil, "extra argument for the started server (repeatable)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
