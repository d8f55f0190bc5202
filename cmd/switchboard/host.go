package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/switchboard-hub/switchboard/internal/agent"
	"github.com/switchboard-hub/switchboard/internal/buildinfo"
)

type hostFlags struct {
	logFlags
	config       string
	url          string
	tokenFile    string
	topic        string
	tcp          string
	shell        string
	statusListen string
	commandKeys  []string // the file's keys that set flags (log_level…), not the agent's
}

func newHostCommand(io stdio) *cobra.Command {
	var f hostFlags
	cmd := &cobra.Command{
		Use:   "host",
		Short: "Bridge local streams and services to topics (the host agent)",
		Long: `Run beside an experiment or a service: dial out to the relay and bridge local
things to topics, each stream on its own link that reconnects by itself.
Stream kinds: tcp (one local TCP connection), http-push (a local listener for
pushed streams such as ffmpeg's MPEG-TS, and local websockets), exec (a
process's stdin and stdout) and shell (1:1 sessions, e.g. ssh). With an
agent section, the host also registers with the hub's job service and runs
the actions it declares (docs/jobs.md).

  switchboard host --config host.yaml
  switchboard host --url https://relay.example --token-file ctl.jwt --topic expt42/ctl --tcp 127.0.0.1:9000

The configuration file is described in docs/host.md (example:
docs/host.example.yaml). With --config, --url, --token-file and
--status-listen replace the file's settings. Token files are read again on
every reconnect, so they can be rotated without a restart. An invalid
configuration refuses to start, naming the key and the problem.

--status-listen serves GET /status (JSON) and GET /metrics (Prometheus text)
with each link's state. SIGINT or SIGTERM stops the agent gracefully.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			keys := hostFileKeys(cmd.Flags())
			if err := loadConfigFile(cmd.Flags(), keys); err != nil {
				return err
			}
			for _, fl := range keys.keyed() {
				f.commandKeys = append(f.commandKeys, configKey(fl.Name))
			}
			return runHost(cmd.Context(), io, &f)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false // help and the README list flags in this order
	fs.StringVar(&f.config, configFlag, "", "YAML configuration file (see docs/host.md)")
	fs.StringVar(&f.url, "url", "", "relay base URL, e.g. https://relay.example")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the token (re-read on every reconnect)")
	fs.StringVar(&f.topic, "topic", "", "quick form: the topic of the one stream")
	fs.StringVar(&f.tcp, "tcp", "", "quick form: bridge the local TCP service at this host:port to --topic")
	fs.StringVar(&f.shell, "shell", "", "quick form: serve shell sessions on --topic, each to a fresh connection to this host:port")
	fs.StringVar(&f.statusListen, "status-listen", "", "serve /status and /metrics on this address, e.g. 127.0.0.1:9100")
	f.logFlags.register(fs)
	return cmd
}

// hostFileKeys are the keys of `switchboard host --config FILE`: the
// agent's (url, token_file, status_listen, streams, agent: docs/host.md)
// and the command's other flags (log_level, log_format…), with the same
// rules as serve's. The quick-form flags (--topic, --tcp, --shell) have no
// key: a file describes its streams.
func hostFileKeys(fs *pflag.FlagSet) fileKeys {
	k := fileKeys{fs: fs, reserved: map[string]bool{configFlag: true, "topic": true, "tcp": true, "shell": true}, others: map[string]bool{}}
	for _, key := range agent.TopLevelKeys() {
		k.others[key] = true
	}
	return k
}

// hostConfig builds the configuration from --config or the quick form.
func hostConfig(f *hostFlags) (*agent.Config, error) {
	if f.config != "" {
		if f.topic != "" || f.tcp != "" || f.shell != "" {
			return nil, errors.New("--topic, --tcp and --shell are the quick form: leave them out with --config (check SWITCHBOARD_TOPIC too)")
		}
		return agent.LoadConfig(f.config, agent.Overrides{URL: f.url, TokenFile: f.tokenFile, StatusListen: f.statusListen, CommandKeys: f.commandKeys})
	}
	var s agent.StreamConfig
	switch {
	case f.tcp != "" && f.shell != "":
		return nil, errors.New("give --tcp or --shell, not both")
	case f.tcp != "":
		s = agent.StreamConfig{Name: "tcp", Kind: agent.KindTCP, Topic: f.topic, Addr: f.tcp}
	case f.shell != "":
		s = agent.StreamConfig{Name: "shell", Kind: agent.KindShell, Topic: f.topic, Addr: f.shell}
	default:
		return nil, errors.New("give --config FILE, or the quick form --url, --token-file, --topic and --tcp (or --shell)")
	}
	cfg := &agent.Config{URL: f.url, TokenFile: f.tokenFile, StatusListen: f.statusListen, Streams: []agent.StreamConfig{s}}
	if err := cfg.Validate(); err != nil {
		return nil, quickFormError(err, s.Kind)
	}
	return cfg, nil
}

// quickFormError names the flags instead of the configuration keys.
func quickFormError(err error, kind string) error {
	addrFlag := "--tcp"
	if kind == agent.KindShell {
		addrFlag = "--shell"
	}
	flags := map[string]string{
		"url": "--url", "token_file": "--token-file", "status_listen": "--status-listen",
		"streams[0].token_file": "--token-file", "streams[0].topic": "--topic", "streams[0].addr": addrFlag,
	}
	var msgs []string
	for _, e := range unjoin(err) {
		var ce *agent.ConfigError
		if errors.As(e, &ce) {
			name := flags[ce.Path]
			if name == "" {
				name = ce.Path
			}
			msgs = append(msgs, name+": "+ce.Problem)
			continue
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "\n"))
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func runHost(ctx context.Context, io stdio, f *hostFlags) error {
	log, err := f.logger(io.err)
	if err != nil {
		return err
	}
	cfg, err := hostConfig(f)
	if err != nil {
		return err
	}
	// Actions start through this binary as their guard (GuardMain in
	// main): their whole process group dies with the host.
	guard, err := os.Executable()
	if err != nil {
		return fmt.Errorf("host: the path of this program, which guards job actions: %w", err)
	}
	a, err := agent.New(cfg, agent.Options{Logger: log, UserAgent: "switchboard-host/" + buildinfo.Version(), Version: buildinfo.Version(),
		ActionGuard: guard})
	if err != nil {
		return err
	}
	if cfg.StatusListen != "" {
		ln, err := net.Listen("tcp", cfg.StatusListen)
		if err != nil {
			return fmt.Errorf("status listener: %w", err)
		}
		srv := &http.Server{Handler: a.StatusHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("status listening", "addr", ln.Addr().String())
	}
	if err := a.Run(ctx); err != nil {
		return err
	}
	log.Info("host agent stopped")
	return nil
}
