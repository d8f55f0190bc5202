package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/buildinfo"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/postgres"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/internal/web"
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
	limits server.Limits
	secretFlags
	logFlags
	listen          string
	publicURL       string
	nodeID          string
	tlsCert, tlsKey string
	leeway          time.Duration
	sendQueue       byteSize
	queueBudget     byteSize
	maxMessage      byteSize
	slowConsumer    string
	writeTimeout    time.Duration
	pingInterval    time.Duration
	sseHeartbeat    time.Duration
	pongTimeout     time.Duration
	allowOrigins    []string
	codeTTL         time.Duration
	shutdownTimeout time.Duration
	lameDuck        time.Duration
	drainWindow     time.Duration
	requestTimeout  time.Duration
	cpuProfile      string
	memProfile      string
	resultsDir      string
	jobs            jobs.Config
	jobMaxFile      byteSize
	jobMaxRun       byteSize
	jobMaxLog       byteSize
	databaseURL     string
	statsEvery      time.Duration
	revocationPoll  time.Duration
	practableStats  string
	coalesce        []string
	metricsListen   string
	trustedProxies  []string
	maxTokenTTL     time.Duration
	maxRefreshLife  time.Duration
	web             webFlags
	cluster         clusterFlags
	changed         func(flag string) bool // whether the flag was set (also through its environment twin)
}

// webFlags configure the dashboard's login.
type webFlags struct {
	sessionTTL, accountTokenTTL time.Duration

	oidcIssuer, oidcClientID, oidcClientSecret, oidcClientSecretFile  string
	oidcRedirectURL, oidcRolesClaim, oidcName, oidcDefaultRole        string
	oidcScopes, oidcAdminGroups, oidcOperatorGroups, oidcViewerGroups []string
	oidcAllowSubjects, oidcAllowEmails                                []string

	githubClientID, githubClientSecret, githubClientSecretFile, githubRedirectURL string
	githubAllowLogins, githubAllowOrgs, githubAdmins, githubOperators             []string
}

func (f *webFlags) register(fs *pflag.FlagSet) {
	fs.DurationVar(&f.sessionTTL, "session-ttl", 12*time.Hour, "how long a dashboard login lasts (sessions are kept in the database: they survive a restart and are shared by a cluster's nodes)")
	fs.DurationVar(&f.accountTokenTTL, "account-token-ttl", 24*time.Hour, "lifetime of the API tokens users create at /account/token/create")
	fs.StringVar(&f.oidcIssuer, "oidc-issuer", "", "OpenID Connect issuer URL for dashboard login (discovery at <issuer>/.well-known/openid-configuration)")
	fs.StringVar(&f.oidcClientID, "oidc-client-id", "", "OIDC client id")
	fs.StringVar(&f.oidcClientSecret, "oidc-client-secret", "", "OIDC client secret (prefer --oidc-client-secret-file or the environment: flags show in ps)")
	fs.StringVar(&f.oidcClientSecretFile, "oidc-client-secret-file", "", "file holding the OIDC client secret")
	fs.StringVar(&f.oidcRedirectURL, "oidc-redirect-url", "", "OIDC redirect URL registered at the provider (default <public-url>/auth/oidc/callback)")
	fs.StringSliceVar(&f.oidcScopes, "oidc-scopes", nil, "OIDC scopes requested besides openid, profile and email (e.g. groups)")
	fs.StringVar(&f.oidcRolesClaim, "oidc-roles-claim", "groups", "ID token claim listing the user's groups (a dotted path such as realm_access.roles reaches into objects)")
	fs.StringSliceVar(&f.oidcAdminGroups, "oidc-admin-groups", nil, "groups whose members are dashboard admins")
	fs.StringSliceVar(&f.oidcOperatorGroups, "oidc-operator-groups", nil, "groups whose members are dashboard operators")
	fs.StringSliceVar(&f.oidcViewerGroups, "oidc-viewer-groups", nil, "groups whose members are dashboard viewers")
	fs.StringVar(&f.oidcDefaultRole, "oidc-default-role", "none", "role of allowlisted users in none of those groups: none, viewer, operator or admin (needs an allowlist)")
	fs.StringSliceVar(&f.oidcAllowSubjects, "oidc-allow-subjects", nil, "if set (or --oidc-allow-emails), only these OIDC subjects (sub claims) may log in")
	fs.StringSliceVar(&f.oidcAllowEmails, "oidc-allow-emails", nil, "if set (or --oidc-allow-subjects), only these verified e-mail addresses may log in")
	fs.StringVar(&f.oidcName, "oidc-name", "", "name of the OIDC provider on the login button (default: the issuer's host)")
	fs.StringVar(&f.githubClientID, "github-client-id", "", "GitHub OAuth app client id for dashboard login")
	fs.StringVar(&f.githubClientSecret, "github-client-secret", "", "GitHub OAuth app client secret (prefer --github-client-secret-file or the environment)")
	fs.StringVar(&f.githubClientSecretFile, "github-client-secret-file", "", "file holding the GitHub OAuth app client secret")
	fs.StringVar(&f.githubRedirectURL, "github-redirect-url", "", "GitHub OAuth callback URL (default <public-url>/auth/github/callback)")
	fs.StringSliceVar(&f.githubAllowLogins, "github-allow-logins", nil, "GitHub logins allowed to log in")
	fs.StringSliceVar(&f.githubAllowOrgs, "github-allow-orgs", nil, "GitHub organisations whose members may log in")
	fs.StringSliceVar(&f.githubAdmins, "github-admins", nil, "allowed GitHub logins who are dashboard admins (others are viewers)")
	fs.StringSliceVar(&f.githubOperators, "github-operators", nil, "allowed GitHub logins who are dashboard operators")
}

// config returns the dashboard's part of the server configuration.
func (f *webFlags) config() (web.Config, error) {
	c := web.Config{SessionTTL: f.sessionTTL, APITokenTTL: f.accountTokenTTL, Version: buildinfo.Version()}
	if f.sessionTTL <= 0 {
		return c, fmt.Errorf("--session-ttl %v: must be positive", f.sessionTTL)
	}
	if f.accountTokenTTL <= 0 {
		return c, fmt.Errorf("--account-token-ttl %v: must be positive", f.accountTokenTTL)
	}
	oidcSecret, err := clientSecret("oidc", f.oidcClientSecret, f.oidcClientSecretFile)
	if err != nil {
		return c, err
	}
	switch {
	case f.oidcIssuer != "":
		if f.oidcClientID == "" {
			return c, fmt.Errorf("--oidc-issuer needs --oidc-client-id")
		}
		role := web.RoleNone
		if f.oidcDefaultRole != "none" && f.oidcDefaultRole != "" {
			if role, err = web.ParseRole(f.oidcDefaultRole); err != nil {
				return c, fmt.Errorf("--oidc-default-role: %w", err)
			}
		}
		c.OIDC = &web.OIDCConfig{
			Issuer: f.oidcIssuer, ClientID: f.oidcClientID, ClientSecret: oidcSecret, RedirectURL: f.oidcRedirectURL,
			Scopes: f.oidcScopes, RolesClaim: f.oidcRolesClaim, Name: f.oidcName, DefaultRole: role,
			AdminGroups: f.oidcAdminGroups, OperatorGroups: f.oidcOperatorGroups, ViewerGroups: f.oidcViewerGroups,
			AllowSubjects: f.oidcAllowSubjects, AllowEmails: f.oidcAllowEmails,
		}
	case f.oidcClientID != "" || oidcSecret != "":
		return c, fmt.Errorf("--oidc-client-id and --oidc-client-secret need --oidc-issuer")
	}
	ghSecret, err := clientSecret("github", f.githubClientSecret, f.githubClientSecretFile)
	if err != nil {
		return c, err
	}
	switch {
	case f.githubClientID != "":
		c.GitHub = &web.GitHubConfig{
			ClientID: f.githubClientID, ClientSecret: ghSecret, RedirectURL: f.githubRedirectURL,
			AllowLogins: f.githubAllowLogins, AllowOrgs: f.githubAllowOrgs, Admins: f.githubAdmins, Operators: f.githubOperators,
		}
	case ghSecret != "" || len(f.githubAllowLogins)+len(f.githubAllowOrgs) > 0:
		return c, fmt.Errorf("--github-client-secret and --github-allow-* need --github-client-id")
	}
	return c, nil
}

// clientSecret returns a provider's client secret from its flag or file.
func clientSecret(provider, value, file string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("give --%s-client-secret or --%s-client-secret-file, not both", provider, provider)
	case file != "":
		b, err := datadir.ReadSecretFile(file)
		if err != nil {
			return "", fmt.Errorf("--%s-client-secret-file: %w", provider, err)
		}
		return string(b), nil
	}
	return value, nil
}

func newServeCommand(io stdio) *cobra.Command {
	f := serveFlags{sendQueue: relay.DefaultSendQueueBytes, maxMessage: relay.DefaultMaxMessageBytes}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a relay node",
		Long: `Run a relay node. With no flags it listens on 127.0.0.1:8080, keeps a generated
secret and node id in ./data, and relays on the "session" prefix.

The web dashboard is at <public-url>/ui/. Users sign in with OpenID Connect
(--oidc-*) or GitHub (--github-*); with neither configured, serve writes a
one-time admin login link (valid 15 minutes) to <data-dir>/login-link at
start, and prints it when stderr is a terminal (never in the log), and
"switchboard login-link" prints a fresh one at any time.

Settings may also come from a YAML file, --config FILE (or
SWITCHBOARD_CONFIG): each key is a flag's name with _ for - (data_dir,
public_url), repeatable flags take lists; see docs/serve.example.yaml. A
flag on the command line wins over its environment variable, which wins over
the file. Unknown keys are errors naming the key and its line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := loadConfigFile(cmd.Flags(), serveFileKeys(cmd.Flags())); err != nil {
				return err
			}
			f.changed = cmd.Flags().Changed
			return runServe(cmd.Context(), io, &f)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false // help, docs/serve.example.yaml and the README list flags in this order
	fs.String(configFlag, "", "YAML file of settings, each a flag's name with _ for - (data_dir: ./data; docs/serve.example.yaml); flags and SWITCHBOARD_* variables win over it")
	f.secretFlags.register(cmd)
	f.logFlags.register(fs)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&f.publicURL, "public-url", "", "public base URL, the token audience (default: derived from --listen)")
	fs.StringVar(&f.nodeID, "node-id", "", "node id in one-time codes, [a-z0-9-]{1,32} (default: generated once, kept in the data dir)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file (with --tls-key: serve HTTPS)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "TLS private key file")
	fs.DurationVar(&f.leeway, "leeway", 5*time.Second, "clock skew tolerated on token times")
	fs.Var(&f.sendQueue, "send-queue", "per-connection send queue bound (at least two messages of --max-message unless set)")
	fs.Var(&f.queueBudget, "queue-budget", "bound on all send queues together; over it the connections above their fair share drop or close (default: a quarter of the machine's or cgroup's memory)")
	fs.Var(&f.maxMessage, "max-message", "largest message accepted (larger closes the sender with 1009)")
	fs.StringVar(&f.slowConsumer, "slow-consumer", "drop", "when a send queue is full: drop (oldest messages) or close (with 4008)")
	fs.DurationVar(&f.writeTimeout, "write-timeout", relay.DefaultWriteTimeout, "deadline of each write to a peer")
	fs.DurationVar(&f.pingInterval, "ping-interval", relay.DefaultPingInterval, "how often to ping each peer (negative: never)")
	fs.DurationVar(&f.pongTimeout, "pong-timeout", relay.DefaultPongTimeout, "how long a peer has to answer a ping")
	fs.DurationVar(&f.sseHeartbeat, "sse-heartbeat", access.DefaultSSEHeartbeat, "how often a server-sent event stream gets a \": ping\" comment, so that proxies keep it open (negative: never)")
	fs.StringSliceVar(&f.allowOrigins, "allow-origin", nil, "browser origin allowed besides the server's own, e.g. https://lab.example.org (repeatable; * for any)")
	fs.DurationVar(&f.codeTTL, "code-ttl", 30*time.Second, "validity of one-time codes")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "bound on graceful shutdown after the lame-duck period")
	fs.DurationVar(&f.lameDuck, "lame-duck", 0, "on shutdown, fail /readyz and keep serving this long first, so that a load balancer stops sending new clients (default 5s in a cluster: a few health-check intervals)")
	fs.DurationVar(&f.drainWindow, "drain-window", 0, "on shutdown, spread the websockets' 1001 closes over this long, so that their clients do not all reconnect at once; below --shutdown-timeout (default 5s in a cluster)")
	fs.DurationVar(&f.requestTimeout, "request-timeout", server.DefaultRequestTimeout, "time to read and answer an ordinary HTTP request (headers have 10 s; a WAIT lasts its wait, uploads and downloads follow --transfer-idle-timeout)")
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL (postgres://…); default: SQLite in <data-dir>/switchboard.db")
	fs.DurationVar(&f.statsEvery, "stats-every", control.DefaultStatsEvery, "how often the stats topic gets a report (also within 1 s of any connect or disconnect)")
	fs.StringVar(&f.practableStats, "practable-stats", "", "serve practable's stats feed on the stats topic to tokens holding this scope but not relay:stats, e.g. read (as practable/status asks; docs/migrating-from-practable.md)")
	fs.StringSliceVar(&f.coalesce, "coalesce", nil, "topic pattern (expt42/control, expt42/*, *) or segment glob (expt*/control) whose readers get what is queued for them merged into one message, as practable's relay does; for hosts that lose messages arriving while busy (repeatable; docs/migrating-from-practable.md)")
	fs.DurationVar(&f.revocationPoll, "revocation-poll", control.DefaultRevocationPoll, "how often the node asks the database for revocation changes it missed on the bus (the bound on how late a lost event takes effect)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "also serve /metrics without authentication on this address (e.g. 127.0.0.1:9100)")
	fs.StringSliceVar(&f.trustedProxies, "trusted-proxy", nil, "network (CIDR) of a reverse proxy whose X-Forwarded-For is believed (repeatable; behind a proxy, needed for --max-requests-per-address and --max-publish-per-address to tell clients apart)")
	fs.IntVar(&f.limits.ConnsPerToken, "max-conns-per-token", access.DefaultMaxConnsPerToken, "relay connections one token may hold open at once (more: 429)")
	fs.IntVar(&f.limits.ConnsPerSubject, "max-conns-per-subject", access.DefaultMaxConnsPerSubject, "relay connections one subject may hold open at once, over all its tokens (more: 429)")
	fs.Float64Var(&f.limits.RequestsPerSecond, "max-requests-per-address", server.DefaultRequestsPerSecond, "HTTP requests per second one client address may make, sustained (more: 429; /healthz and /readyz are never limited)")
	fs.IntVar(&f.limits.RequestBurst, "request-burst", 0, "HTTP requests one client address may make at once (default: twice --max-requests-per-address)")
	fs.Float64Var(&f.limits.Publish.PerToken, "max-publish-per-token", access.DefaultPublishPerToken, "HTTP publish requests per second one token may make, sustained (each one message or a batch of up to 100; more: 429)")
	fs.IntVar(&f.limits.Publish.TokenBurst, "publish-burst-per-token", 0, "HTTP publish requests one token may make at once (default: twice --max-publish-per-token)")
	fs.Float64Var(&f.limits.Publish.PerAddress, "max-publish-per-address", access.DefaultPublishPerAddress, "HTTP publish requests per second one client address may make, sustained, whatever its tokens (behind a proxy, see --trusted-proxy; more: 429)")
	fs.IntVar(&f.limits.Publish.AddressBurst, "publish-burst-per-address", 0, "HTTP publish requests one client address may make at once (default: twice --max-publish-per-address)")
	fs.IntVar(&f.limits.FDReserve, "fd-reserve", 0, "file descriptors kept for health checks, the store and logs: past the descriptor limit less this, new connections get 503 (default: 5% of the limit, at least 64)")
	fs.DurationVar(&f.maxTokenTTL, "max-token-ttl", control.DefaultMaxTokenTTL, "longest lifetime of tokens minted by the token API")
	fs.DurationVar(&f.maxRefreshLife, "max-refresh-lifetime", control.DefaultMaxRefreshLife, "how long after its first issue a token chain can be refreshed to")
	fs.StringVar(&f.resultsDir, "results-dir", "", "directory of jobs' output files (default <data-dir>/results; in a cluster the shared PostgreSQL, unless this names a directory every node mounts)")
	fs.DurationVar(&f.jobs.LostGrace, "job-lost-grace", jobs.DefaultLostGrace, "how long a job's run survives its agent's disconnection before it is marked lost")
	fs.DurationVar(&f.jobs.MaxWait, "job-max-wait", jobs.DefaultMaxWait, "longest WAIT of a blocking job request (what WAIT=-1 means)")
	fs.IntVar(&f.jobs.MaxWaitsPerSubject, "job-max-waits-per-subject", jobs.DefaultMaxWaitsPerSubject, "blocking WAIT requests one subject may have open at once (more: 429 too_many_waits)")
	fs.DurationVar(&f.jobs.TransferIdleTimeout, "transfer-idle-timeout", jobs.DefaultTransferIdleTimeout, "an output file upload or a result download fails when it moves no bytes for this long (its total time is not bounded)")
	fs.DurationVar(&f.jobs.DefaultDestruction, "job-destruction", jobs.DefaultDestruction, "destruction time of a new job, from its creation (negative: never)")
	fs.DurationVar(&f.jobs.TimerLeaseTTL, "job-timer-lease-ttl", jobs.DefaultTimerLeaseTTL, "how long the store lease on the job timers outlives its holder's last renewal (a node that dies holding it delays the timers by up to this)")
	fs.DurationVar(&f.jobs.TimerLeaseRenew, "job-timer-lease-renew", 0, "how often the holder renews the job timer lease and the other nodes ask for it; below --job-timer-lease-ttl (default: a third of it)")
	f.jobMaxFile, f.jobMaxRun = jobs.DefaultMaxFileBytes, jobs.DefaultMaxRunBytes
	fs.Var(&f.jobMaxFile, "job-max-file", "largest output file an agent may upload")
	fs.Var(&f.jobMaxRun, "job-max-run", "largest total of one run's output files")
	f.jobMaxLog = jobs.DefaultMaxLogBytes
	fs.Var(&f.jobMaxLog, "job-max-log", "largest stored log of one run (result logs/{agent}.txt; a marker shows where it was cut); 0 keeps no logs")
	f.web.register(fs)
	f.cluster.register(fs)
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (for benchmarking)")
	_ = fs.MarkHidden("cpuprofile")
	fs.StringVar(&f.memProfile, "memprofile", "", "write a heap profile to this file when shutdown starts, before connections close (for benchmarking)")
	_ = fs.MarkHidden("memprofile")
	return cmd
}

func runServe(ctx context.Context, io stdio, f *serveFlags) error {
	log, err := f.logger(io.err)
	if err != nil {
		return err
	}
	// One process per data directory: a second one would share the SQLite
	// file and the node id without sharing revocations held in memory.
	lock, err := datadir.Acquire(f.dataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer lock.Release()
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
	if err := f.cluster.check(f.databaseURL); err != nil {
		return err
	}
	if f.cluster.enabled() {
		// Behind a load balancer: leave gracefully unless told otherwise.
		if !f.changed("lame-duck") {
			f.lameDuck = clusterLameDuck
		}
		if !f.changed("drain-window") {
			f.drainWindow = clusterDrainWindow
		}
	}
	if !f.changed("send-queue") { // room for two messages of --max-message
		f.sendQueue = byteSize(relay.DefaultSendQueueFor(int(f.maxMessage)))
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
	if err := checkTimerLease(f.jobs.TimerLeaseTTL, f.jobs.TimerLeaseRenew); err != nil {
		return err
	}
	f.jobs.MaxFileBytes, f.jobs.MaxRunBytes = int64(f.jobMaxFile), int64(f.jobMaxRun)
	f.jobs.MaxLogBytes = int64(f.jobMaxLog)
	if f.jobMaxLog == 0 {
		f.jobs.MaxLogBytes = -1 // jobs.Config: negative keeps none, 0 is the default
	}
	webConfig, err := f.web.config()
	if err != nil {
		return err
	}
	// What the node is given: its store, its bus (the in-memory bus of a
	// node alone, or NATS in a cluster) and where result files go.
	db, err := openStore(ctx, f.databaseURL, f.dataDir, log)
	if err != nil {
		return err
	}
	defer db.Close()
	bus, err := f.cluster.openBus(nodeID, secret, int(f.maxMessage), log)
	if err != nil {
		return err
	}
	defer bus.Close()
	results, err := openResults(f, db, log)
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		Listen: f.listen, PublicURL: f.publicURL, Secret: secret, JWTAlgorithm: f.alg, Leeway: f.leeway,
		NodeID: nodeID, TLSCert: f.tlsCert, TLSKey: f.tlsKey,
		Relay: relay.Config{
			SendQueueBytes: int(f.sendQueue), MaxMessageBytes: int(f.maxMessage), SlowConsumer: policy,
			WriteTimeout: f.writeTimeout, PingInterval: f.pingInterval, PongTimeout: f.pongTimeout,
			QueueBudgetBytes: int64(f.queueBudget),
		},
		AllowedOrigins: f.allowOrigins, SSEHeartbeat: f.sseHeartbeat, CodeTTL: f.codeTTL, ShutdownTimeout: f.shutdownTimeout,
		LameDuck: f.lameDuck, DrainWindow: f.drainWindow,
		RequestTimeout: f.requestTimeout,
		StatsEvery:     f.statsEvery, RevocationPoll: f.revocationPoll, MetricsListen: f.metricsListen, TrustedProxies: proxies,
		MaxTokenTTL: f.maxTokenTTL, MaxRefreshLifetime: f.maxRefreshLife,
		Jobs: f.jobs, Web: webConfig, Limits: f.limits,
		PractableStats: f.practableStats, Coalesce: f.coalesce,
	}, server.Deps{Store: db, Bus: bus, Results: results, Logger: log})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		return err
	}
	if err := datadir.WritePublicURL(f.dataDir, srv.PublicURL()); err != nil {
		log.Warn("could not record the public URL in the data dir; `switchboard token` will need --audience", "err", err)
	}
	if providers := srv.Dashboard().Providers(); len(providers) > 0 {
		log.Info("dashboard: single sign-on", "providers", strings.Join(providers, ","), "login", srv.PublicURL()+"/login")
	} else if err := printLoginLink(io, log, srv.Dashboard(), f.dataDir); err != nil {
		log.Warn("dashboard: could not make a login link; use `switchboard login-link`", "err", err)
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-srv.Done():
		return fmt.Errorf("serve: %w", err)
	}
	if f.memProfile != "" {
		if err := writeMemProfile(f.memProfile, log); err != nil {
			log.Warn("could not write the heap profile", "err", err)
		}
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// writeMemProfile writes a heap profile (after a collection, so that it
// shows what is live now) and logs the runtime's memory statistics.
func writeMemProfile(path string, log *slog.Logger) error {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	log.Info("memory", "heap_inuse", ms.HeapInuse, "heap_alloc", ms.HeapAlloc, "heap_objects", ms.HeapObjects,
		"stack_inuse", ms.StackInuse, "sys", ms.Sys, "goroutines", runtime.NumGoroutine())
	pf, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(pf, 0); err != nil {
		pf.Close()
		return err
	}
	return pf.Close()
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

// openResults picks where result files go: the directory --results-dir
// names (in a cluster, one that every node mounts), else in a cluster the
// shared PostgreSQL (every node serves every file), else
// <data-dir>/results.
func openResults(f *serveFlags, db store.Store, log *slog.Logger) (blob.Store, error) {
	if pg, ok := db.(*postgres.Store); ok && f.cluster.enabled() && f.resultsDir == "" {
		log.Info("results: in PostgreSQL")
		return pg.Blobs(), nil
	}
	dir := f.resultsDir
	if dir == "" {
		dir = filepath.Join(f.dataDir, "results")
	}
	results, err := blob.NewDir(dir)
	if err != nil {
		return nil, fmt.Errorf("--results-dir: %w", err)
	}
	log.Info("results: in a directory", "path", dir)
	return results, nil
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

// checkTimerLease validates --job-timer-lease-ttl and
// --job-timer-lease-renew: a positive TTL, and a renewal (0: a third of the
// TTL, as in jobs.Config) shorter than it, so that a live holder renews
// before its lease runs out.
func checkTimerLease(ttl, renew time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("--job-timer-lease-ttl %v: want a positive duration", ttl)
	}
	if renew < 0 {
		return fmt.Errorf("--job-timer-lease-renew %v: want a positive duration (0: a third of --job-timer-lease-ttl)", renew)
	}
	if renew >= ttl {
		return fmt.Errorf("--job-timer-lease-renew %v must be shorter than --job-timer-lease-ttl %v (the holder renews before its lease runs out)", renew, ttl)
	}
	return nil
}
