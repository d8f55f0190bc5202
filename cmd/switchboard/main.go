// Command switchboard is the Switchboard relay: one binary with subcommands
// to serve, mint tokens, connect as a client and benchmark.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboard-hub/switchboard/internal/agent"
)

func main() {
	agent.GuardMain() // a job action's guard (internal/agent/guard.go) exits here
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRootCommand(os.Stdin, os.Stdout, os.Stderr).ExecuteContext(ctx)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "switchboard:", ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a specific exit status.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// stdio carries the streams a command uses, so whole command sequences can
// be run from tests.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}
