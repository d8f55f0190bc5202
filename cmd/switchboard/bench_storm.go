package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-hub/switchboard/internal/bench"
)

// stormServerArgs put back, for the server `bench storm` starts, the
// default limits that the other bench commands lift for their load
// generator (0 means the default): the storm measures whether a node as
// deployed admits it.
var stormServerArgs = []string{"--max-conns-per-token", "0", "--max-conns-per-subject", "0",
	"--max-requests-per-address", "0", "--fd-reserve", "0"}

func newBenchStormCommand(io stdio) *cobra.Command {
	f := benchFanoutFlags{benchRunFlags: benchRunFlags{readers: 1, duration: time.Second}}
	var opts bench.StormOptions
	cmd := &cobra.Command{
		Use:   "storm",
		Short: "Connection storm: every client of a restarted node reconnecting at once",
		Long: `--conns clients (default 10,000), each with its own token and subject and
by default its own loopback source address (127.0.0.2, 127.0.0.3, …, so that
the per-address request limit sees them as the distinct clients they are),
connect with pkg/client, --parallel at a time, in one step (the token in the
handshake) or with --two-step (access request, websocket with the code). Each
connection is held until the whole storm is admitted, then closed: the bench
and the server each need a descriptor per client (10,000 fit a file limit of
20,000 per process). Reported: clients admitted, refusals by status and error
code, other failures, admission latency quantiles (dial start to open
websocket), and the server's CPU per admission. Without --url the started
server keeps its default limits (unlike the other bench commands; add
--server-arg to change them); --sources 1 stands for clients behind one NAT
address. Exits non-zero unless every client was admitted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.url == "" {
				f.serverArgs = append(append([]string(nil), stormServerArgs...), f.serverArgs...)
			}
			fo, stop, err := benchFanoutSetup(cmd, io, &f)
			if err != nil {
				return err
			}
			defer stop()
			if fo.Secret == nil {
				return errors.New("bench storm mints a token per client: give --secret or --secret-file with --url")
			}
			opts.URL, opts.Secret, opts.Topic, opts.ServerPID = fo.URL, fo.Secret, fo.Topic, fo.ServerPID
			res, err := bench.Storm(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if err := f.output(io, &res); err != nil {
				return err
			}
			return res.Err()
		},
	}
	fs := cmd.Flags()
	addBenchTargetFlags(fs, &f, bench.DefaultStormTopic, "(not used: the storm mints a token per client)")
	fs.IntVar(&opts.Conns, "conns", bench.DefaultStormConns, "clients, each with its own token, held until all are admitted")
	fs.IntVar(&opts.Parallel, "parallel", bench.DefaultStormParallel, "clients connecting at once")
	fs.IntVar(&opts.Sources, "sources", 0, "loopback source addresses the clients are spread over (default: one per client)")
	fs.BoolVar(&opts.TwoStep, "two-step", false, "connect with the access request and the code instead of the token in the handshake")
	return cmd
}
