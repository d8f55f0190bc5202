package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// linkStats is the live state of one link (a stream, or one feed of an
// http-push stream), read by Status.
type linkStats struct {
	name, stream, kind, topic string // fixed at creation
	local                     string // which local side the kind has: "conn", "process", "push", "sessions", "runs"

	mu         sync.Mutex // guards the fields below
	connected  bool
	since      time.Time // of the last change of connected
	connects   int64
	lastErr    string
	lastErrAt  time.Time
	localUp    bool
	localSince time.Time
	localErr   string
	localErrAt time.Time

	bytesTo, msgsTo, bytesFrom, msgsFrom atomic.Int64
	drops                                atomic.Int64 // messages not delivered: local side down or too slow
	localAttempts                        atomic.Int64 // local connections or process starts tried
	active                               atomic.Int64 // http-push: pushes and local websockets; shell: sessions
	sessions, sessionsFailed             atomic.Int64 // shell: sessions started, sessions that failed to open
	// agent: runs started, runs that succeeded and that did not (failed,
	// timed out, aborted, rejected), results waiting for the hub's ack;
	// active holds the runs in progress.
	runsStarted, runsSucceeded, runsFailed, resultsPending atomic.Int64
}

func newLinkStats(name, stream, kind, topic, local string) *linkStats {
	return &linkStats{name: name, stream: stream, kind: kind, topic: topic, local: local, since: time.Now()}
}

func (s *linkStats) up() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected, s.since = true, time.Now()
	s.connects++
}

func (s *linkStats) down(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected, s.since = false, time.Now()
	if err != nil {
		s.lastErr, s.lastErrAt = redact(err.Error()), s.since
	}
}

func (s *linkStats) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr, s.lastErrAt = redact(err.Error()), time.Now()
}

func (s *linkStats) localUpNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.localUp, s.localSince = true, time.Now()
}

func (s *linkStats) localDown(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.localUp || s.localSince.IsZero() {
		s.localSince = now
	}
	s.localUp = false
	if err != nil {
		s.localErr, s.localErrAt = redact(err.Error()), now
	}
}

func (s *linkStats) sent(n int) {
	s.bytesTo.Add(int64(n))
	s.msgsTo.Add(1)
}

func (s *linkStats) received(n int) {
	s.bytesFrom.Add(int64(n))
	s.msgsFrom.Add(1)
}

// LinkStatus is the state of one link: a stream, or one feed of an
// http-push stream.
type LinkStatus struct {
	Name       string     `json:"name"` // the stream's name, or "stream/feed"
	Stream     string     `json:"stream"`
	Kind       string     `json:"kind"`
	Topic      string     `json:"topic"`
	Connected  bool       `json:"connected"` // the relay link is up
	Since      time.Time  `json:"since"`     // when it last went up or down
	Reconnects int64      `json:"reconnects"`
	LastError  string     `json:"last_error,omitempty"`
	LastErrAt  *time.Time `json:"last_error_at,omitempty"`

	MessagesToRelay   int64 `json:"messages_to_relay"`
	BytesToRelay      int64 `json:"bytes_to_relay"`
	MessagesFromRelay int64 `json:"messages_from_relay"`
	BytesFromRelay    int64 `json:"bytes_from_relay"`
	Drops             int64 `json:"drops"`

	Local *LocalStatus `json:"local,omitempty"`
}

// LocalStatus is the state of a link's local side.
type LocalStatus struct {
	// tcp and exec: the local connection or process.
	Connected *bool      `json:"connected,omitempty"`
	Since     *time.Time `json:"since,omitempty"`
	Attempts  int64      `json:"attempts,omitempty"` // connections or starts tried
	// http-push: active pushes and local websockets; shell: open sessions.
	Active *int64 `json:"active,omitempty"`
	// shell: sessions started and sessions that could not be opened.
	Sessions       *int64 `json:"sessions,omitempty"`
	SessionsFailed *int64 `json:"sessions_failed,omitempty"`
	// agent: runs in progress (Active), started, succeeded, and ended
	// otherwise (failed, timed out, aborted, rejected); results not yet
	// acknowledged by the hub.
	RunsStarted    *int64     `json:"runs_started,omitempty"`
	RunsSucceeded  *int64     `json:"runs_succeeded,omitempty"`
	RunsFailed     *int64     `json:"runs_failed,omitempty"`
	ResultsPending *int64     `json:"results_pending,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	LastErrAt      *time.Time `json:"last_error_at,omitempty"`
}

func (s *linkStats) snapshot() LinkStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := LinkStatus{
		Name: s.name, Stream: s.stream, Kind: s.kind, Topic: s.topic,
		Connected: s.connected, Since: s.since, Reconnects: max(s.connects-1, 0), LastError: s.lastErr,
		MessagesToRelay: s.msgsTo.Load(), BytesToRelay: s.bytesTo.Load(),
		MessagesFromRelay: s.msgsFrom.Load(), BytesFromRelay: s.bytesFrom.Load(), Drops: s.drops.Load(),
	}
	if !s.lastErrAt.IsZero() {
		t := s.lastErrAt
		st.LastErrAt = &t
	}
	l := &LocalStatus{LastError: s.localErr}
	if !s.localErrAt.IsZero() {
		t := s.localErrAt
		l.LastErrAt = &t
	}
	switch s.local {
	case "conn", "process":
		up, since := s.localUp, s.localSince
		l.Connected, l.Attempts = &up, s.localAttempts.Load()
		if !since.IsZero() {
			l.Since = &since
		}
	case "push":
		a := s.active.Load()
		l.Active = &a
	case "sessions":
		a, n, f := s.active.Load(), s.sessions.Load(), s.sessionsFailed.Load()
		l.Active, l.Sessions, l.SessionsFailed = &a, &n, &f
	case "runs":
		a, st, ok, f, p := s.active.Load(), s.runsStarted.Load(), s.runsSucceeded.Load(), s.runsFailed.Load(), s.resultsPending.Load()
		l.Active, l.RunsStarted, l.RunsSucceeded, l.RunsFailed, l.ResultsPending = &a, &st, &ok, &f, &p
	}
	st.Local = l
	return st
}

// Status returns the state of every link, in configuration order.
func (a *Agent) Status() []LinkStatus {
	out := make([]LinkStatus, 0, len(a.links))
	for _, s := range a.links {
		out = append(out, s.snapshot())
	}
	return out
}

// StatusHandler serves GET /status (JSON: {"links": [LinkStatus…]}) and
// GET /metrics (Prometheus text). Neither shows a token or a code.
// Requests a browser sends for another origin's page are refused
// (localOnly): a page shown on this host cannot read the host's state.
func (a *Agent) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			Links []LinkStatus `json:"links"`
		}{a.Status()})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		bw := bufio.NewWriter(w)
		writeMetrics(bw, a.Status())
		_ = bw.Flush()
	})
	return localOnly(mux)
}

// series is one value of a metric family for a link; ok false leaves it out.
type series func(l LinkStatus) (extraLabels string, v float64, ok bool)

// writeMetrics writes the links' state in the Prometheus text format.
func writeMetrics(w *bufio.Writer, links []LinkStatus) {
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	family := func(name, typ, help string, ss ...series) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, s := range ss {
			for _, l := range links {
				extra, v, ok := s(l)
				if !ok {
					continue
				}
				fmt.Fprintf(w, "%s{link=%q,stream=%q,kind=%q,topic=%q%s} %g\n",
					name, escLabel(l.Name), escLabel(l.Stream), l.Kind, escLabel(l.Topic), extra, v)
			}
		}
	}
	plain := func(f func(l LinkStatus) float64) series {
		return func(l LinkStatus) (string, float64, bool) { return "", f(l), true }
	}
	local := func(f func(l *LocalStatus) (float64, bool)) series {
		return func(l LinkStatus) (string, float64, bool) {
			if l.Local == nil {
				return "", 0, false
			}
			v, ok := f(l.Local)
			return "", v, ok
		}
	}
	const to, from = `,direction="to_relay"`, `,direction="from_relay"`
	family("switchboard_host_link_up", "gauge", "Whether the link to the relay is connected.",
		plain(func(l LinkStatus) float64 { return b2f(l.Connected) }))
	family("switchboard_host_link_since_seconds", "gauge", "Unix time of the link's last connect or disconnect.",
		plain(func(l LinkStatus) float64 { return float64(l.Since.UnixNano()) / 1e9 }))
	family("switchboard_host_reconnects_total", "counter", "Connections to the relay after the first.",
		plain(func(l LinkStatus) float64 { return float64(l.Reconnects) }))
	family("switchboard_host_messages_total", "counter", "Messages sent to or received from the relay.",
		func(l LinkStatus) (string, float64, bool) { return to, float64(l.MessagesToRelay), true },
		func(l LinkStatus) (string, float64, bool) { return from, float64(l.MessagesFromRelay), true })
	family("switchboard_host_bytes_total", "counter", "Payload bytes sent to or received from the relay.",
		func(l LinkStatus) (string, float64, bool) { return to, float64(l.BytesToRelay), true },
		func(l LinkStatus) (string, float64, bool) { return from, float64(l.BytesFromRelay), true })
	family("switchboard_host_drops_total", "counter", "Messages not delivered locally, or live data not sent while the link was down.",
		plain(func(l LinkStatus) float64 { return float64(l.Drops) }))
	family("switchboard_host_local_up", "gauge", "Whether the local connection or process is up (tcp, exec).",
		local(func(l *LocalStatus) (float64, bool) {
			if l.Connected == nil {
				return 0, false
			}
			return b2f(*l.Connected), true
		}))
	family("switchboard_host_local_attempts_total", "counter", "Local connections or process starts tried (tcp, exec).",
		local(func(l *LocalStatus) (float64, bool) { return float64(l.Attempts), l.Connected != nil }))
	family("switchboard_host_local_active", "gauge", "Active pushes and local websockets (http-push), open sessions (shell), runs in progress (agent).",
		local(func(l *LocalStatus) (float64, bool) {
			if l.Active == nil {
				return 0, false
			}
			return float64(*l.Active), true
		}))
	family("switchboard_host_sessions_total", "counter", "Shell sessions started.",
		local(func(l *LocalStatus) (float64, bool) {
			if l.Sessions == nil {
				return 0, false
			}
			return float64(*l.Sessions), true
		}))
	family("switchboard_host_sessions_failed_total", "counter", "Shell sessions that could not be opened.",
		local(func(l *LocalStatus) (float64, bool) {
			if l.SessionsFailed == nil {
				return 0, false
			}
			return float64(*l.SessionsFailed), true
		}))
	runs := func(outcome string, f func(l *LocalStatus) *int64) series {
		return func(l LinkStatus) (string, float64, bool) {
			if l.Local == nil || f(l.Local) == nil {
				return "", 0, false
			}
			return `,outcome="` + outcome + `"`, float64(*f(l.Local)), true
		}
	}
	family("switchboard_host_runs_started_total", "counter", "Runs of actions started (agent).",
		local(func(l *LocalStatus) (float64, bool) {
			if l.RunsStarted == nil {
				return 0, false
			}
			return float64(*l.RunsStarted), true
		}))
	family("switchboard_host_runs_ended_total", "counter", "Runs of actions ended, by outcome: succeeded, or failed (failed, timed out, aborted, rejected) (agent).",
		runs("succeeded", func(l *LocalStatus) *int64 { return l.RunsSucceeded }),
		runs("failed", func(l *LocalStatus) *int64 { return l.RunsFailed }))
	family("switchboard_host_results_pending", "gauge", "Results of runs not yet acknowledged by the hub (agent).",
		local(func(l *LocalStatus) (float64, bool) {
			if l.ResultsPending == nil {
				return 0, false
			}
			return float64(*l.ResultsPending), true
		}))
}

// escLabel leaves a label value for %q: names and topics hold only
// characters that need no escaping, but stay safe if that changes.
func escLabel(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
