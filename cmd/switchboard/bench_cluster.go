package main

import (
	"encoding/json"
	"fmt"
	goio "io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-hub/switchboard/internal/bench"
)

// Scenarios of `bench cluster`.
const (
	clusterScenarioFanout       = "fanout"
	clusterScenarioFirstMessage = "first-message"
	clusterScenarioForeignCode  = "foreign-code"
	clusterScenarioDeny         = "deny"
	clusterScenarioKill         = "kill"
)

// defaultClusterRate is the paced rate of `bench cluster`'s fan-out: issue
// 14's 1,000 msg/s (0 is unpaced).
const defaultClusterRate = 1000

type benchClusterFlags struct {
	scenario    string
	nodes       int
	databaseURL string
	serverArgs  []string
	json        bool
	// fanout
	readers    int
	size       byteSize
	rate       float64
	duration   time.Duration
	warmup     time.Duration
	drain      time.Duration
	singleNode bool
	// first-message, foreign-code
	rounds   int
	parallel int
	timeout  time.Duration
	// deny
	deny bench.DenyOptions
	// kill
	kill bench.ClusterKillOptions
}

func newBenchClusterCommand(io stdio) *cobra.Command {
	f := benchClusterFlags{size: bench.DefaultSize}
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Cluster mode: cross-node fan-out, first message after connect, foreign codes, deny, kill -9 of a node",
		Long: `Starts a cluster of --nodes "serve" child processes of this binary on
loopback (n1, n2, …; embedded NATS routes on free ports, every node peering
with every route; one generated --secret-file; one --public-url standing for a
load balancer) on PostgreSQL: --database-url, or without it a throwaway
PostgreSQL started in a temporary directory (initdb and pg_ctl must be
installed; as root they run as the "postgres" user). It waits until every
node's /readyz says it has joined, runs one --scenario, stops everything and
prints the report. Clients talk to the nodes directly (no load balancer):
each access POST and websocket GET goes to the node the scenario chooses.

--scenario fanout (the default): one writer on n1, --readers readers spread
evenly over all nodes (reader i on node i mod n), one topic, --size byte
messages at --rate messages/s (default 1000; 0: unpaced) for --warmup then
--duration. Reports drops and latency quantiles for the readers on the
writer's node and on the other nodes, and the difference (the latency a node
hop adds). Unpaced, it then runs "bench fanout" on a single node with the same
options (unless --single-node=false) and prints the ratio of delivered
messages/s.

--scenario first-message: --rounds rounds (default 10,000), --parallel at a
time, each on a new topic: a writer connects to n1; a reader connects to
another node (round robin); as soon as the reader's handshake returned, the
writer sends one message. A round is lost if the reader gets nothing within
--timeout (default 2s).

--scenario foreign-code: --rounds handshakes (default 4,000) one at a time:
the access POST on n1, then the websocket GET alternately on the node the
code names and on another node (which takes the code over the bus). Reports
handshake quantiles of both and what a foreign code adds.

--scenario deny: --conns connections (default 10,000), connection i on node
i mod n, the first --denied (default 1,000) of them on one booking, over
--topics topics; the booking is denied through n1's API (POST /bids/deny).
Reports how long each denied connection took to close (quantiles, and per
node), how many closed with 4003, and that no other connection closed.

--scenario kill: --clients clients (default 1,000) connect to n2, which is
then killed with SIGKILL; each client reconnects by trying the other nodes'
URLs in turn (no load balancer), backing off after a failure, for up to
--kill-timeout. Meanwhile 8 loops open new sessions on the survivors.
Reports the reconnection time from the kill (quantiles), the survivors' new
session latency meanwhile, and every 5xx answer.

Node CPU time and peak memory are read from /proc. Only loopback addresses
are used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runBenchCluster(cmd, io, &f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.scenario, "scenario", clusterScenarioFanout, "fanout, first-message, foreign-code, deny or kill")
	fs.IntVar(&f.nodes, "nodes", bench.DefaultClusterNodes, "cluster nodes (at least 2)")
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL the nodes share (postgres://…; default: start a throwaway PostgreSQL)")
	fs.StringSliceVar(&f.serverArgs, "server-arg", nil, "extra argument for every node, e.g. --server-arg=--send-queue=1MiB (repeatable)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object instead of a table")
	fs.IntVar(&f.readers, "readers", bench.DefaultReaders, "fanout: reader connections, spread over the nodes")
	fs.Var(&f.size, "size", fmt.Sprintf("fanout: message size (at least %d bytes)", bench.MinSize))
	fs.Float64Var(&f.rate, "rate", defaultClusterRate, "fanout: messages per second (0: unpaced)")
	fs.DurationVar(&f.duration, "duration", bench.DefaultDuration, "fanout: measured period")
	fs.DurationVar(&f.warmup, "warmup", bench.DefaultWarmup, "fanout: unmeasured period before --duration")
	fs.DurationVar(&f.drain, "drain", bench.DefaultDrain, "fanout: longest wait for the last messages after the writer stops")
	fs.BoolVar(&f.singleNode, "single-node", true, `fanout, unpaced: then run "bench fanout" on one node with the same options, for the ratio`)
	fs.IntVar(&f.rounds, "rounds", 0, fmt.Sprintf("first-message, foreign-code: rounds (default %d and %d)", bench.DefaultFirstMessageRounds, bench.DefaultForeignCodeRounds))
	fs.IntVar(&f.parallel, "parallel", bench.DefaultFirstMessageParallel, "first-message: rounds at a time")
	fs.DurationVar(&f.timeout, "timeout", bench.DefaultFirstMessageTimeout, "first-message: how long a reader waits for its message before it is lost")
	fs.IntVar(&f.deny.Conns, "conns", 10_000, "deny: connections held")
	fs.IntVar(&f.deny.Denied, "denied", 1_000, "deny: connections on the denied booking")
	fs.IntVar(&f.deny.Topics, "topics", 100, "deny: topics the connections are spread over")
	fs.IntVar(&f.kill.Clients, "clients", bench.DefaultKillClients, "kill: clients of the killed node")
	fs.DurationVar(&f.kill.Timeout, "kill-timeout", bench.DefaultKillTimeout, "kill: how long each client may take to reconnect")
	return cmd
}

func runBenchCluster(cmd *cobra.Command, io stdio, f *benchClusterFlags) error {
	switch f.scenario {
	case clusterScenarioFanout, clusterScenarioFirstMessage, clusterScenarioForeignCode, clusterScenarioDeny, clusterScenarioKill:
	default:
		return fmt.Errorf("--scenario %q: want %s, %s, %s, %s or %s", f.scenario, clusterScenarioFanout, clusterScenarioFirstMessage,
			clusterScenarioForeignCode, clusterScenarioDeny, clusterScenarioKill)
	}
	switch {
	case f.nodes < 2:
		return fmt.Errorf("--nodes %d: want at least 2", f.nodes)
	case f.duration <= 0:
		return fmt.Errorf("--duration %v: must be positive", f.duration)
	case f.rate < 0:
		return fmt.Errorf("--rate %v: want 0 (unpaced) or a positive rate", f.rate)
	case f.rounds < 0 || f.parallel < 1 || f.timeout <= 0:
		return fmt.Errorf("--rounds, --parallel and --timeout: want positive values")
	}
	warmup := f.warmup
	if warmup == 0 {
		warmup = -1 // none
	}
	ctx := cmd.Context()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find own binary: %w", err)
	}
	c, err := bench.StartCluster(ctx, bench.ClusterOptions{Binary: exe, Nodes: f.nodes, DatabaseURL: f.databaseURL,
		ExtraArgs: f.serverArgs, Stderr: io.err})
	if err != nil {
		return err
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		return c.Stop()
	}
	defer stop()

	var res interface{ WriteTable(w goio.Writer) error }
	switch f.scenario {
	case clusterScenarioFanout:
		r, err := bench.ClusterFanout(ctx, c.Target, bench.ClusterFanoutOptions{Readers: f.readers, Size: int(f.size), Rate: f.rate,
			Duration: f.duration, Warmup: warmup, Drain: f.drain})
		if err != nil {
			return err
		}
		if f.rate == 0 && f.singleNode {
			// The reference runs alone on the machine, as the cluster did.
			if err := stop(); err != nil {
				return err
			}
			srv, err := bench.StartServer(ctx, exe, f.serverArgs, io.err)
			if err != nil {
				return err
			}
			single, err := bench.Fanout(ctx, bench.FanoutOptions{URL: srv.URL, Secret: srv.Secret, Readers: f.readers, Size: int(f.size),
				Duration: f.duration, Warmup: warmup, Drain: f.drain, ServerPID: srv.PID})
			if serr := srv.Stop(); err == nil {
				err = serr
			}
			if err != nil {
				return fmt.Errorf("single-node reference: %w", err)
			}
			r.SingleNode = &single
			if single.DeliveredPerSec > 0 {
				ratio := r.All.DeliveredPerSec / single.DeliveredPerSec
				r.Ratio = &ratio
			}
		}
		res = &r
	case clusterScenarioFirstMessage:
		r, err := bench.FirstMessage(ctx, c.Target, bench.FirstMessageOptions{Rounds: f.rounds, Parallel: f.parallel, Timeout: f.timeout})
		if err != nil {
			return err
		}
		res = &r
	case clusterScenarioForeignCode:
		r, err := bench.ForeignCode(ctx, c.Target, bench.ForeignCodeOptions{Rounds: f.rounds})
		if err != nil {
			return err
		}
		res = &r
	case clusterScenarioDeny:
		r, err := bench.ClusterDeny(ctx, c.Target, f.deny)
		if err != nil {
			return err
		}
		res = &r
	case clusterScenarioKill:
		f.kill.Kill = c.Kill
		r, err := bench.ClusterKill(ctx, c.Target, f.kill)
		if err != nil {
			return err
		}
		res = &r
	}
	if err := stop(); err != nil {
		return err
	}
	if f.json {
		return json.NewEncoder(io.out).Encode(res)
	}
	if c.TempDatabase {
		fmt.Fprintln(io.out, "database          a throwaway PostgreSQL (no --database-url)")
	}
	return res.WriteTable(io.out)
}
