package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"switchboard/internal/bench"
	"switchboard/internal/datadir"
)

func newBenchCommand(io stdio) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark a relay",
	}
	cmd.AddCommand(newBenchFanoutCommand(io))
	return cmd
}

type benchFanoutFlags struct {
	url        string
	token      string
	secret     string
	secretFile string
	topic      string
	readers    int
	size       byteSize
	rate       float64
	duration   time.Duration
	warmup     time.Duration
	drain      time.Duration
	json       bool
	serverPID  int
	serverArgs []string
	cpuProfile string
}

func newBenchFanoutCommand(io stdio) *cobra.Command {
	f := benchFanoutFlags{size: bench.DefaultSize}
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "One writer, many readers on one topic: throughput, latency, drops",
		Long: `One writer and --readers readers connect to one topic. The writer sends
--size byte messages, unpaced (--rate 0) or at --rate messages per second, for
--warmup then --duration; readers count and time what they receive. Reported:
messages sent and delivered, delivered messages/s and MB/s (1 MB = 1e6 bytes),
one-way latency quantiles, drops and sequence gaps, measured over --duration.

Without --url the bench starts its own server (this binary, "serve" on a
loopback port with a temporary data directory) and also reports the server's
CPU time and peak memory. With --url, give --token (read and write on the
topic) or the server's --secret/--secret-file; --server-pid adds its CPU and
memory to the report. Only loopback addresses are allowed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runBenchFanout(cmd, io, &f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.url, "url", "", "relay base URL (default: start a server child process)")
	fs.StringVar(&f.token, "token", "", "token granting read and write on the topic")
	fs.StringVar(&f.secret, "secret", "", "the relay's token signing secret (HS256), to mint tokens")
	fs.StringVar(&f.secretFile, "secret-file", "", "file holding the relay's token signing secret")
	fs.StringVar(&f.topic, "topic", bench.DefaultTopic, "topic")
	fs.IntVar(&f.readers, "readers", bench.DefaultReaders, "reader connections")
	fs.Var(&f.size, "size", fmt.Sprintf("message size (at least %d bytes)", bench.MinSize))
	fs.Float64Var(&f.rate, "rate", 0, "messages per second sent by the writer (0: unpaced)")
	fs.DurationVar(&f.duration, "duration", bench.DefaultDuration, "measured period")
	fs.DurationVar(&f.warmup, "warmup", bench.DefaultWarmup, "unmeasured period before --duration")
	fs.DurationVar(&f.drain, "drain", bench.DefaultDrain, "longest wait for the last messages after the writer stops")
	fs.BoolVar(&f.json, "json", false, "print one JSON object instead of a table")
	fs.IntVar(&f.serverPID, "server-pid", 0, "process id of the relay given by --url, to report its CPU time and peak RSS")
	fs.StringSliceVar(&f.serverArgs, "server-arg", nil, "extra argument for the started server, e.g. --server-arg=--send-queue=1MiB (repeatable)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the bench process to this file")
	_ = fs.MarkHidden("cpuprofile")
	return cmd
}

func runBenchFanout(cmd *cobra.Command, io stdio, f *benchFanoutFlags) error {
	ctx := cmd.Context()
	if f.secret != "" && f.secretFile != "" {
		return fmt.Errorf("give --secret or --secret-file, not both")
	}
	opts := bench.FanoutOptions{
		URL: f.url, Token: f.token, Topic: f.topic, Readers: f.readers, Size: int(f.size),
		Rate: f.rate, Duration: f.duration, Warmup: f.warmup, Drain: f.drain, ServerPID: f.serverPID,
	}
	if f.warmup == 0 {
		opts.Warmup = -1 // none
	}
	if f.duration <= 0 {
		return fmt.Errorf("--duration %v: must be positive", f.duration)
	}
	switch {
	case f.secret != "":
		opts.Secret = []byte(f.secret)
	case f.secretFile != "":
		s, err := datadir.ReadSecretFile(f.secretFile)
		if err != nil {
			return err
		}
		opts.Secret = s
	}
	if f.url == "" {
		if f.token != "" || opts.Secret != nil || f.serverPID != 0 {
			return fmt.Errorf("--token, --secret, --secret-file and --server-pid go with --url")
		}
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find own binary: %w", err)
		}
		srv, err := bench.StartServer(ctx, exe, f.serverArgs, io.err)
		if err != nil {
			return err
		}
		defer srv.Stop()
		opts.URL, opts.Secret, opts.ServerPID = srv.URL, srv.Secret, srv.PID
	} else {
		if len(f.serverArgs) > 0 {
			return fmt.Errorf("--server-arg needs a started server: leave out --url")
		}
		if f.token == "" && opts.Secret == nil {
			return fmt.Errorf("with --url, give --token or --secret/--secret-file")
		}
	}

	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	res, err := bench.Fanout(ctx, opts)
	if err != nil {
		return err
	}
	if f.json {
		enc := json.NewEncoder(io.out)
		return enc.Encode(&res)
	}
	return res.WriteTable(io.out)
}
