// Package agent is the host agent behind `switchboard host`: it runs beside
// an experiment or a service, dials out to the relay and bridges local
// things to topics, each stream on its own reconnecting link.
//
// Stream kinds:
//   - tcp: one local TCP connection bridged to a topic (bytes → binary
//     messages, messages → bytes);
//   - http-push: a local HTTP listener taking pushed bodies (ffmpeg's
//     `-f mpegts http://…/ts/feed`), cut into messages on whole 188-byte
//     MPEG-TS packets, and a local websocket /ws/{feed} both ways;
//   - exec: a process whose stdout becomes messages and whose stdin gets
//     them, restarted with backoff;
//   - shell: the host side of the relay's 1:1 sessions (docs/protocol.md,
//     "Shell sessions"): a fresh local TCP connection per user.
//
// With an agent section the host also keeps the hub's agent control
// channel (docs/jobs.md): it declares its actions, runs them when the hub
// asks, streams their output and keeps their results in a state directory
// until the hub acknowledges them.
//
// A link re-reads its token file on every connect, retries with exponential
// backoff and jitter, backs off long when denied, and never spins. Status
// reports each link's state; StatusHandler serves it as JSON and Prometheus
// text.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Options tune an Agent; the zero value is the production setting.
type Options struct {
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
	// Backoff is the retry policy of links, local connections and
	// processes; zero fields take DefaultBackoff's.
	Backoff Backoff
	// HTTPClient makes the access requests and websocket handshakes; nil
	// means the agent's own (HTTP/1.1, proxy from the environment, TCP
	// keep-alive probes).
	HTTPClient *http.Client
	// UserAgent is sent to the relay; "" means "switchboard-host".
	UserAgent string
	// Version is the agent's version, sent to the hub in hello.
	Version string
	// ActionGuard is the program that starts each job action and kills
	// the action's whole process group as soon as the agent dies
	// (guard.go): a program whose main calls GuardMain first, usually the
	// switchboard binary itself (os.Executable). "": actions are started
	// directly; processes they start themselves then outlive a killed
	// agent until it starts again.
	ActionGuard string

	// killGrace is how long a run's process group has between SIGTERM and
	// SIGKILL; 0 means stopGrace (tests shorten it).
	killGrace time.Duration
	// logFlush is how often a run's output lines are sent; 0 means
	// logFlushInterval.
	logFlush time.Duration
	// sleep waits out a retry delay of a link, local connection or
	// process and reports whether it passed (false: ctx ended); nil means
	// the package's sleep. Tests record the delays and hold them.
	sleep func(ctx context.Context, d time.Duration) bool
}

// Agent runs the streams of a Config. Create it with New, then call Run.
type Agent struct {
	cfg     *Config
	log     *slog.Logger
	backoff Backoff
	sleep   func(ctx context.Context, d time.Duration) bool // see Options.sleep
	http    *http.Client
	ownHTTP bool // http was made by New: its idle connections are closed by Run
	header  http.Header
	links   []*linkStats // in configuration order
	streams []stream
	jobs    *jobAgent // nil without an agent section
}

// stream is one configured stream.
type stream interface {
	// prepare opens what must exist before the agent starts (listeners),
	// so that a busy port refuses the start.
	prepare() error
	// run bridges the stream until ctx ends.
	run(ctx context.Context)
}

// New checks cfg and builds the agent's streams. cfg must have passed
// Validate (LoadConfig does it).
func New(cfg *Config, opts Options) (*Agent, error) {
	if cfg == nil || cfg.URL == "" || (len(cfg.Streams) == 0 && cfg.Agent == nil) {
		return nil, errors.New("agent: a validated configuration with a URL and streams or an agent section is required")
	}
	a := &Agent{cfg: cfg, log: opts.Logger, backoff: opts.Backoff.withDefaults(), sleep: opts.sleep, http: opts.HTTPClient}
	if a.sleep == nil {
		a.sleep = sleep
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.http == nil {
		a.http, a.ownHTTP = newHTTPClient(), true
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = "switchboard-host"
	}
	a.header = http.Header{"User-Agent": {ua}}
	for i := range cfg.Streams {
		sc := &cfg.Streams[i]
		var s stream
		switch sc.Kind {
		case KindTCP:
			s = newTCPStream(a, sc)
		case KindHTTPPush:
			s = newPushStream(a, sc)
		case KindExec:
			s = newExecStream(a, sc)
		case KindShell:
			s = newShellStream(a, sc)
		default:
			return nil, fmt.Errorf("agent: stream %q: unknown kind %q", sc.Name, sc.Kind)
		}
		a.streams = append(a.streams, s)
	}
	if cfg.Agent != nil {
		j, err := newJobAgent(a, cfg.Agent, opts)
		if err != nil {
			return nil, err
		}
		a.jobs = j
	}
	return a, nil
}

// newLink makes a link and registers its status.
func (a *Agent) newLink(name, streamName, kind, prefix, topic, tokenFile, local string) *link {
	st := newLinkStats(name, streamName, kind, topic, local)
	a.links = append(a.links, st)
	if tokenFile == "" {
		tokenFile = a.cfg.TokenFile
	}
	return &link{a: a, st: st, prefix: prefix, topic: topic, tokenFile: tokenFile,
		log: a.log.With("stream", name)}
}

// Run opens the streams' listeners (an error if one cannot listen) and
// then runs every stream until ctx ends. It returns after every stream has
// stopped: local connections closed, processes terminated.
func (a *Agent) Run(ctx context.Context) error {
	release, err := a.lockStateDir()
	if err != nil {
		return err
	}
	defer release()
	for _, s := range a.streams {
		if err := s.prepare(); err != nil {
			for _, s := range a.streams {
				if c, ok := s.(interface{ closeListener() }); ok {
					c.closeListener()
				}
			}
			return err
		}
	}
	return a.runPrepared(ctx)
}

// runPrepared runs the prepared streams until ctx ends.
func (a *Agent) runPrepared(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range a.streams {
		wg.Go(func() { s.run(ctx) })
	}
	if a.jobs != nil {
		wg.Go(func() { a.jobs.run(ctx) })
		wg.Go(func() { a.agentTokenRenewer().run(ctx) })
	}
	a.log.Info("host agent running", "relay", a.cfg.URL, "streams", len(a.streams), "links", len(a.links))
	wg.Wait()
	if a.ownHTTP {
		a.http.CloseIdleConnections()
	}
	return nil
}

// localDialTimeout bounds a dial to a local service.
const localDialTimeout = 10 * time.Second

// keepAliveDialer dials with TCP keep-alive probes every 5 s after 15 s
// idle, giving up after 3 unanswered ones.
func keepAliveDialer() *net.Dialer {
	return &net.Dialer{
		Timeout:         localDialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
}
