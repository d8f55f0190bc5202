package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/switchboard-hub/switchboard/internal/bench"
)

// accessBaselineServerCommand is the hidden child of `bench access
// --baseline`: it serves the access baseline (a bare websocket upgrade) on a
// loopback port, prints its URL on stdout and runs until SIGTERM.
const accessBaselineServerCommand = "access-baseline-server"

func newBenchAccessBaselineServerCommand(io stdio) *cobra.Command {
	return &cobra.Command{
		Use:    accessBaselineServerCommand,
		Short:  "Serve the access baseline (for bench access --baseline)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return bench.RunAccessBaselineServer(ctx, io.out)
		},
	}
}

// runAccessBaseline runs the access scenario against the baseline, in a
// child process of this binary so that its CPU time is its own, with the
// client options of opts.
func runAccessBaseline(ctx context.Context, io stdio, opts bench.AccessOptions) (bench.AccessResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return bench.AccessResult{}, fmt.Errorf("bench: find own binary: %w", err)
	}
	child, err := bench.StartAccessBaseline(ctx, exe, []string{"bench", accessBaselineServerCommand}, io.err)
	if err != nil {
		return bench.AccessResult{}, err
	}
	defer child.Stop()
	opts.URL, opts.ServerPID, opts.Baseline = child.URL, child.PID, true
	return bench.Access(ctx, opts)
}
