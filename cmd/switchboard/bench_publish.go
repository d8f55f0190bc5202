package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/switchboard-hub/switchboard/internal/bench"
)

func newBenchPublishCommand(io stdio) *cobra.Command {
	f := benchFanoutFlags{benchRunFlags: benchRunFlags{duration: bench.DefaultPublishDuration}}
	var opts bench.PublishOptions
	cmd := &cobra.Command{
		Use:   "publish",
		Short: "HTTP publish against a websocket writer, and SSE readers against websocket readers",
		Long: `Phases on one relay, in one run, each measured for --duration after --warmup:

  1. one websocket writer to a topic with --readers websocket readers (the
     reference);
  2. HTTP publish (POST /api/v1/publish, keep-alive) to the same readers, for
     every --clients count and --batches size (messages per request; a batch
     of 1 is a text/plain body, more a JSON array);
  3. the websocket writer again, to --readers server-sent-event readers.

Messages are --size bytes of text. Reported per phase: messages published
and delivered per second, the share of the expected deliveries, failed
requests and, with the server's pid (always when the bench starts the
server), its CPU time per published message and per delivery, and the CPU per
message relative to phase 1. Publishers are unpaced (each HTTP client sends
its next request when the last is answered) unless --rate sets the total
messages per second of every phase.

Without --url the bench starts its own server, with the per-token and
per-address limits lifted (publish ones included). With --url, give
--secret/--secret-file, and --server-pid for the CPU figures.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fo, stop, err := benchFanoutSetup(cmd, io, &f)
			if err != nil {
				return err
			}
			defer stop()
			if fo.Secret == nil {
				return errors.New("bench publish mints its tokens: give --secret or --secret-file with --url")
			}
			opts.URL, opts.Secret, opts.Topic, opts.ServerPID = fo.URL, fo.Secret, fo.Topic, fo.ServerPID
			opts.Readers, opts.Size, opts.Rate, opts.Duration, opts.Warmup = f.readers, int(f.size), f.rate, f.duration, f.warmup
			if f.warmup == 0 {
				opts.Warmup = -1 // none
			}
			res, err := bench.Publish(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return f.output(io, &res)
		},
	}
	fs := cmd.Flags()
	addBenchTargetFlags(fs, &f, bench.DefaultPublishTopic, "(not used: the bench mints its tokens)")
	f.size = bench.DefaultPublishSize
	fs.IntVar(&f.readers, "readers", bench.DefaultReaders, "readers of the topic (websocket, then as many SSE readers)")
	fs.Var(&f.size, "size", "message size")
	fs.Float64Var(&f.rate, "rate", 0, "messages per second of every phase, in total (0: unpaced)")
	fs.DurationVar(&f.duration, "duration", bench.DefaultPublishDuration, "measured window of each phase")
	fs.DurationVar(&f.warmup, "warmup", bench.DefaultWarmup, "unmeasured time before each window (0: none)")
	fs.IntSliceVar(&opts.Clients, "clients", []int{1, 16}, "HTTP publish clients (keep-alive connections), one phase per count and batch")
	fs.IntSliceVar(&opts.Batches, "batches", []int{1, 100}, "messages per HTTP publish request, one phase per count and batch (at most 100)")
	return cmd
}
