package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"switchboard/internal/control"
	"switchboard/internal/datadir"
	"switchboard/internal/jobs"
	"switchboard/internal/relay"
	"switchboard/internal/server"
	"switchboard/internal/store"
	"switchboard/internal/store/postgres"
	"switchboard/internal/store/sqlite"
)

// secretFlags select the token signing secret, shared by serve and token.
type secretFlags struct {
	secret     string
	secretFile string
	dataDir    string
	alg        string
}

func (s *secretFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&s.secret, "secret", "", "token signing secret (prefer --secret-file or SWITCHBOARD_SECRET: flags show in ps)")
	fs.StringVar(&s.secretFile, "secret-file", "", "file holding the token signing secret")
	fs.StringVar(&s.dataDir, "data-dir", "./data", "data directory (generated secret, node id, recorded public URL)")
	fs.StringVar(&s.alg, "jwt-alg", "HS256", "token signing algorithm: HS256, HS384 or HS512 (tokens with any other alg are refused)")
}

// load returns the secret: --secret, else --secret-file, else the one in the
// data directory, generated there if create is set.
func (s *secretFlags) load(create bool) ([]byte, error) {
	switch {
	case s.secret != "" && s.secretFile != "":
		return nil, fmt.Errorf("give --secret or --secret-file, not both")
	case s.secret != "":
		return []byte(s.secret), nil
	case s.secretFile != "":
		return datadir.ReadSecretFile(s.secretFile)
	case create:
		return datadir.LoadOrCreateSecret(s.dataDir)
	}
	b, err := datadir.LoadSecret(s.dataDir)
	if err != nil {
		return nil, fmt.Errorf("no secret given and none in %s (start `switchboard serve --data-dir %s` once, or pass --secret-file): %w", s.dataDir, s.dataDir, err)
	}
	return b, nil
}

type serveFlags struct {
	secretFlags
	logFlags
	listen          string
	publicURL       string
	nodeID          string
	tlsCert, tlsKey string
	leeway          time.Duration
	sendQueue       byteSize
	maxMessage      byteSize
	slowConsumer    string
	writeTimeout    time.Duration
	pingInterval    time.Duration
	pongTimeout     time.Duration
	allowOrigins    []string
	codeTTL         time.Duration
	shutdownTimeout time.Duration
	cpuProfile      string
	resultsDir      string
	jobs            jobs.Config
	jobMaxFile      byteSize
	jobMaxRun       byteSize
	databaseURL     string
	statsEvery      time.Duration
	metricsListen   string
	trustedProxies  []string
	maxTokenTTL     time.Duration
	maxRefreshLife  time.Duration
}

func newServeCommand(io stdio) *cobra.Command {
	f := serveFlags{sendQueue: relay.DefaultSendQueueBytes, maxMessage: relay.DefaultMaxMessageBytes}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a relay node",
		Long: `Run a relay node. With no flags it listens on 127.0.0.1:8080, keeps a generated
secret and node id in ./data, and relays on the "session" prefix.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runServe(cmd.Context(), io, &f) },
	}
	fs := cmd.Flags()
	f.secretFlags.register(cmd)
	f.logFlags.register(fs)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&f.publicURL, "public-url", "", "public base URL, the token audience (default: derived from --listen)")
	fs.StringVar(&f.nodeID, "node-id", "", "node id in one-time codes, [a-z0-9-]{1,32} (default: generated once, kept in the data dir)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file (with --tls-key: serve HTTPS)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "TLS private key file")
	fs.DurationVar(&f.leeway, "leeway", 5*time.Second, "clock skew tolerated on token times")
	fs.Var(&f.sendQueue, "send-queue", "per-connection send queue bound")
	fs.Var(&f.maxMessage, "max-message", "largest message accepted (larger closes the sender with 1009)")
	fs.StringVar(&f.slowConsumer, "slow-consumer", "drop", "when a send queue is full: drop (oldest messages) or close (with 4008)")
	fs.DurationVar(&f.writeTimeout, "write-timeout", relay.DefaultWriteTimeout, "deadline of each write to a peer")
	fs.DurationVar(&f.pingInterval, "ping-interval", relay.DefaultPingInterval, "how often to ping each peer (negative: never)")
	fs.DurationVar(&f.pongTimeout, "pong-timeout", relay.DefaultPongTimeout, "how long a peer has to answer a ping")
	fs.StringSliceVar(&f.allowOrigins, "allow-origin", nil, "browser origin allowed besides the server's own, e.g. https://lab.example.org (repeatable; * for any)")
	fs.DurationVar(&f.codeTTL, "code-ttl", 30*time.Second, "validity of one-time codes")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "bound on graceful shutdown")
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL (postgres://…); default: SQLite in <data-dir>/switchboard.db")
	fs.DurationVar(&f.statsEvery, "stats-every", control.DefaultStatsEvery, "how often the stats topic gets a report (also within 1 s of any connect or disconnect)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "also serve /metrics without authentication on this address (e.g. 127.0.0.1:9100)")
	fs.StringSliceVar(&f.trustedProxies, "trusted-proxy", nil, "network (CIDR) of a reverse proxy whose X-Forwarded-For is believed (repeatable)")
	fs.DurationVar(&f.maxTokenTTL, "max-token-ttl", control.DefaultMaxTokenTTL, "longest lifetime of tokens minted by the token API")
	fs.DurationVar(&f.maxRefreshLife, "max-refresh-lifetime", control.DefaultMaxRefreshLife, "how long after its first issue a token chain can be refreshed to")
	fs.StringVar(&f.resultsDir, "results-dir", "", "directory of jobs' output files (default <data-dir>/results)")
	fs.DurationVar(&f.jobs.LostGrace, "job-lost-grace", jobs.DefaultLostGrace, "how long a job's run survives its agent's disconnection before it is marked lost")
	fs.DurationVar(&f.jobs.MaxWait, "job-max-wait", jobs.DefaultMaxWait, "longest WAIT of a blocking job request (what WAIT=-1 means)")
	fs.DurationVar(&f.jobs.DefaultDestruction, "job-destruction", jobs.DefaultDestruction, "destruction time of a new job, from its creation (negative: never)")
	f.jobMaxFile, f.jobMaxRun = jobs.DefaultMaxFileBytes, jobs.DefaultMaxRunBytes
	fs.Var(&f.jobMaxFile, "job-max-file", "largest output file an agent may upload")
	fs.Var(&f.jobMaxRun, "job-max-run", "largest total of one run's output files")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (for benchmarking)")
	_ = fs.MarkHidden("cpuprofile")
	return cmd
}

func runServe(ctx context.Context, io stdio, f *serveFlags) error {
	log, err := f.logger(io.err)
	if err != nil {
		return err
	}
	if err := datadir.Ensure(f.dataDir); err != nil {
		return err
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
	secret, err := f.load(true)
	if err != nil {
		return err
	}
	nodeID := f.nodeID
	if nodeID == "" {
		if nodeID, err = datadir.LoadOrCreateNodeID(f.dataDir); err != nil {
			return err
		}
	}
	policy, err := relay.ParsePolicy(f.slowConsumer)
	if err != nil {
		return fmt.Errorf("--slow-consumer: %w", err)
	}
	if _, _, err := net.SplitHostPort(f.listen); err != nil {
		return fmt.Errorf("--listen %q: %w", f.listen, err)
	}
	var proxies []netip.Prefix
	for _, p := range f.trustedProxies {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return fmt.Errorf("--trusted-proxy %q: want a CIDR such as 10.0.0.0/8 or an address", p)
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		proxies = append(proxies, pfx.Masked())
	}
	resultsDir := f.resultsDir
	if resultsDir == "" {
		resultsDir = filepath.Join(f.dataDir, "results")
	}
	f.jobs.MaxFileBytes, f.jobs.MaxRunBytes = int64(f.jobMaxFile), int64(f.jobMaxRun)
	db, err := openStore(ctx, f.databaseURL, f.dataDir, log)
	if err != nil {
		return err
	}
	defer db.Close()
	srv, err := server.Start(server.Config{
		Listen: f.listen, PublicURL: f.publicURL, Secret: secret, JWTAlgorithm: f.alg, Leeway: f.leeway,
		NodeID: nodeID, TLSCert: f.tlsCert, TLSKey: f.tlsKey,
		Relay: relay.Config{
			SendQueueBytes: int(f.sendQueue), MaxMessageBytes: int(f.maxMessage), SlowConsumer: policy,
			WriteTimeout: f.writeTimeout, PingInterval: f.pingInterval, PongTimeout: f.pongTimeout,
		},
		AllowedOrigins: f.allowOrigins, CodeTTL: f.codeTTL, ShutdownTimeout: f.shutdownTimeout, Logger: log,
		Store: db, StatsEvery: f.statsEvery, MetricsListen: f.metricsListen, TrustedProxies: proxies,
		MaxTokenTTL: f.maxTokenTTL, MaxRefreshLifetime: f.maxRefreshLife,
		BlobDir: resultsDir, Jobs: f.jobs,
	})
	if err != nil {
		return err
	}
	if err := datadir.WritePublicURL(f.dataDir, srv.PublicURL()); err != nil {
		log.Warn("could not record the public URL in the data dir; `switchboard token` will need --audience", "err", err)
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-srv.Done():
		return fmt.Errorf("serve: %w", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// openStore opens PostgreSQL when url is given, else SQLite in dataDir.
func openStore(ctx context.Context, url, dataDir string, log *slog.Logger) (store.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if url != "" {
		if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
			return nil, fmt.Errorf("--database-url: want postgres://…")
		}
		db, err := postgres.Open(ctx, url, postgres.Options{Logger: log})
		if err != nil {
			return nil, err
		}
		log.Info("store: PostgreSQL")
		return db, nil
	}
	path := filepath.Join(dataDir, "switchboard.db")
	db, err := sqlite.Open(ctx, path, sqlite.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("store: SQLite", "path", path)
	return db, nil
}

// defaultPublicURL returns the URL the server in dataDir last served, or the
// default server's URL.
func defaultPublicURL(dataDir string) string {
	if u, err := datadir.ReadPublicURL(dataDir); err == nil && u != "" {
		return u
	}
	if v := os.Getenv("SWITCHBOARD_PUBLIC_URL"); v != "" {
		return v
	}
	return "http://127.0.0.1:8080"
}
