package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// ShellPrefix is the relay's connection type of 1:1 sessions (pkg/wire).
const ShellPrefix = wire.PrefixShell

// sessionDialTimeout bounds opening both sides of a session; the relay
// gives the host 10 s to dial.
const sessionDialTimeout = 10 * time.Second

// shellStream is the host side of the relay's shell sessions
// (docs/protocol.md, "Shell sessions"): a control connection to
// shell/{topic} on which the relay announces each user, and for each a
// fresh local TCP connection piped 1:1 to a websocket of its own. Sessions
// outlive the control connection that announced them.
type shellStream struct {
	link        *link
	addr        string
	chunk       int
	maxSessions int

	wg sync.WaitGroup // the sessions
}

func newShellStream(a *Agent, sc *StreamConfig) *shellStream {
	return &shellStream{
		link:        a.newLink(sc.Name, sc.Name, sc.Kind, ShellPrefix, sc.Topic, sc.TokenFile, "sessions"),
		addr:        sc.Addr,
		chunk:       sc.Chunk,
		maxSessions: sc.MaxSessions,
	}
}

func (s *shellStream) prepare() error { return nil }

func (s *shellStream) run(ctx context.Context) {
	s.link.run(ctx, func(cctx context.Context, c *client.Conn) error { return s.control(ctx, cctx, c) })
	s.wg.Wait()
}

// connectMsg is the relay's announcement of a session. Unknown fields are
// ignored.
type connectMsg struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	URI     string `json:"uri"`
}

// control reads the control connection and starts a session for each
// announcement. Sessions run under agentCtx, not the connection's life.
func (s *shellStream) control(agentCtx, ctx context.Context, c *client.Conn) error {
	st, log := s.link.st, s.link.log
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return err
		}
		st.received(len(data))
		if typ != client.Text {
			continue
		}
		var m connectMsg
		if err := json.Unmarshal(data, &m); err != nil || m.Type != "connect" {
			log.Debug("control message ignored", "bytes", len(data))
			continue
		}
		if err := checkSessionURI(m.URI); err != nil {
			st.sessionsFailed.Add(1)
			log.Warn("session refused: bad uri", "session", m.Session, "error", err)
			continue
		}
		if st.active.Load() >= int64(s.maxSessions) {
			st.sessionsFailed.Add(1)
			log.Warn("session refused: max_sessions reached; the relay closes the user with 4004", "session", m.Session, "max_sessions", s.maxSessions)
			continue
		}
		st.sessions.Add(1)
		st.active.Add(1)
		s.wg.Go(func() {
			defer st.active.Add(-1)
			s.session(agentCtx, m)
		})
	}
}

func checkSessionURI(uri string) error {
	u, err := url.Parse(uri)
	if err != nil || u.Host == "" {
		return errors.New("not a URL")
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("scheme %q: want ws or wss", u.Scheme)
	}
	return nil
}

// session opens the local connection and the session's websocket and pipes
// them 1:1 until either ends.
func (s *shellStream) session(ctx context.Context, m connectMsg) {
	st, log := s.link.st, s.link.log.With("session", m.Session)
	dctx, cancel := context.WithTimeout(ctx, sessionDialTimeout)
	defer cancel()
	// The local side first: if the service is down, the user is not
	// connected to nothing; the relay closes them with 4004.
	local, err := keepAliveDialer().DialContext(dctx, "tcp", s.addr)
	if err != nil {
		st.localDown(err)
		st.sessionsFailed.Add(1)
		log.Warn("session refused: local service unreachable; the relay closes the user with 4004", "addr", s.addr, "error", err)
		return
	}
	ws, err := client.DialURI(dctx, m.URI, &client.Options{Prefix: ShellPrefix, HTTPClient: s.link.a.http, Header: s.link.a.header})
	if err != nil {
		local.Close()
		st.sessionsFailed.Add(1)
		log.Warn("session failed: could not dial the relay", "error", redact(err.Error()))
		return
	}
	log.Info("session open", "addr", s.addr)
	start := time.Now()
	up, down := pipeSession(ctx, local, ws, s.chunk, st)
	log.Info("session closed", "to_relay", up, "from_relay", down, "duration", time.Since(start).Round(time.Millisecond))
}

// pipeSession copies local → ws and ws → local until either side ends,
// then closes both. It returns the bytes copied each way.
func pipeSession(ctx context.Context, local net.Conn, ws *client.Conn, chunk int, st *linkStats) (up, down int64) {
	var once sync.Once
	closeBoth := func(graceful bool) {
		once.Do(func() {
			local.Close()
			if graceful {
				ws.Close() // 1000: the relay closes the user with 1000 too
			} else {
				ws.CloseNow()
			}
		})
	}
	stop := context.AfterFunc(ctx, func() { closeBoth(false) })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { // local → relay
		buf := make([]byte, chunk)
		for {
			n, err := local.Read(buf)
			if n > 0 {
				if werr := ws.Write(ctx, client.Binary, buf[:n]); werr != nil {
					closeBoth(false)
					return
				}
				up += int64(n)
				st.sent(n)
			}
			if err != nil {
				closeBoth(err == io.EOF) // the service ended the session
				return
			}
		}
	})
	wg.Go(func() { // relay → local
		var buf []byte
		for {
			_, data, err := ws.ReadInto(ctx, buf)
			if err != nil {
				closeBoth(false)
				return
			}
			buf = data
			st.received(len(data))
			if _, err := local.Write(data); err != nil {
				closeBoth(false)
				return
			}
			down += int64(len(data))
			if cap(buf) > 4<<20 {
				buf = nil
			}
		}
	})
	wg.Wait()
	return up, down
}
