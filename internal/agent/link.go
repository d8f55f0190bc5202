package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Bounds of one connection attempt and of one write to the relay.
const (
	connectTimeout = 20 * time.Second
	// writeTimeout bounds a write to the relay on a stream link; a relay
	// that takes longer is treated as gone and the link reconnects.
	writeTimeout = 30 * time.Second
)

// link keeps one relay connection up for a stream (or a feed): it re-reads
// the token file, trades it for a code, dials, hands the connection to serve
// until it fails, and retries with backoff.
type link struct {
	a         *Agent
	st        *linkStats
	prefix    string
	topic     string
	tokenFile string
	readLimit int64 // largest message read; 0: pkg/client's default
	log       *slog.Logger
}

// run keeps the link up until ctx ends. serve is called with each new
// connection and returns when the connection fails; run closes it.
func (l *link) run(ctx context.Context, serve func(ctx context.Context, c *client.Conn) error) {
	bo := &backoff{p: l.a.backoff}
	for ctx.Err() == nil {
		c, err := l.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.st.failed(err)
			d := l.retryDelay(err, bo)
			if !l.a.sleep(ctx, d) {
				return
			}
			continue
		}
		l.st.up()
		l.log.Info("link connected", "topic", l.topic)
		start := time.Now()
		err = serve(ctx, c)
		c.CloseNow()
		l.st.down(err)
		if ctx.Err() != nil {
			return
		}
		bo.done(time.Since(start))
		d := l.retryDelay(err, bo)
		if !l.a.sleep(ctx, d) {
			return
		}
	}
}

// connect reads the token file and dials the relay.
func (l *link) connect(ctx context.Context) (*client.Conn, error) {
	tok, err := readTokenFile(l.tokenFile)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	return client.Dial(cctx, l.a.cfg.URL, l.topic, tok, &client.Options{
		Prefix: l.prefix, HTTPClient: l.a.http, Header: l.a.header, ReadLimit: l.readLimit,
	})
}

// retryDelay picks the delay after err and logs it at a level that fits.
func (l *link) retryDelay(err error, bo *backoff) time.Duration {
	var ce *client.CloseError
	var ae *client.AccessError
	msg := redact(err.Error())
	switch {
	case errors.As(err, &ce) && ce.Code.Reconnect() == wire.ReconnectWithNewToken: // 4001
		bo.reset()
		d := bo.next()
		l.log.Info("link: token expired; re-reading the token file", "topic", l.topic, "retry_in", d)
		return d
	case errors.As(err, &ce) && ce.Code.Reconnect() == wire.ReconnectNever: // 4003, 4009
		// An agent never gives up, but retrying soon cannot help.
		d := bo.long()
		what := "denied by an operator"
		if ce.Code == wire.CloseSuperseded {
			what = "superseded by another host on the same topic"
		}
		l.log.Error("link closed: "+what+"; backing off long", "topic", l.topic, "code", int(ce.Code), "retry_in", d)
		return d
	case errors.As(err, &ce) && ce.Code == wire.ClosePolicy && strings.HasPrefix(ce.Reason, wire.CloseTextLabelForbidden):
		// The hub refused a label the token does not allow: retrying soon
		// cannot help until an operator changes the token or the config.
		d := bo.long()
		l.log.Error("link closed: the token does not allow a configured label; backing off long", "topic", l.topic, "reason", ce.Reason, "retry_in", d)
		return d
	case errors.As(err, &ae) && (ae.Code == wire.ErrorBookingDenied || ae.Code == wire.ErrorTokenRevoked):
		d := bo.long()
		l.log.Error("link refused: the token is revoked; backing off long", "topic", l.topic, "status", ae.Status, "code", ae.Code, "retry_in", d)
		return d
	case errors.As(err, &ae):
		d := bo.next()
		l.log.Warn("link refused", "topic", l.topic, "status", ae.Status, "code", ae.Code, "error", msg, "retry_in", d)
		return d
	case errors.As(err, &ce):
		d := bo.next()
		l.log.Warn("link closed", "topic", l.topic, "code", int(ce.Code), "error", msg, "retry_in", d)
		return d
	}
	d := bo.next()
	l.log.Warn("link down", "topic", l.topic, "error", msg, "retry_in", d)
	return d
}

// codeParam matches one-time codes and bearer tokens in error texts: a
// failed websocket dial names its URL, code included.
var codeParam = regexp.MustCompile(`(code=)[^&\s"']+|(Bearer )[^\s"']+`)

// redact removes one-time codes and tokens from an error text.
func redact(s string) string {
	return codeParam.ReplaceAllString(s, "${1}${2}REDACTED")
}

// relaySlot holds a stream's current relay connection, so that the local
// side can send on whichever connection is up. Writes are serialised.
type relaySlot struct {
	mu    sync.Mutex    // guards conn and ready
	conn  *client.Conn  // nil while the link is down
	ready chan struct{} // closed while conn is set

	wmu sync.Mutex // serialises writes on conn
}

func newRelaySlot() *relaySlot { return &relaySlot{ready: make(chan struct{})} }

func (s *relaySlot) set(c *client.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = c
	close(s.ready)
}

// clear forgets c if it is the current connection.
func (s *relaySlot) clear(c *client.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c && c != nil {
		s.conn = nil
		s.ready = make(chan struct{})
	}
}

func (s *relaySlot) current() (*client.Conn, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn, s.ready
}

// send writes one message, waiting while the link is down and retrying on
// the next connection if a write fails. It returns only when the message
// was written or ctx ended.
func (s *relaySlot) send(ctx context.Context, typ client.MessageType, data []byte) error {
	for {
		c, ready := s.current()
		if c == nil {
			select {
			case <-ready:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if s.write(ctx, c, typ, data) == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// trySend writes one message if the link is up and reports whether it did;
// live data (pushed video, local websockets) is not held while it is down.
func (s *relaySlot) trySend(ctx context.Context, typ client.MessageType, data []byte) bool {
	c, _ := s.current()
	return c != nil && s.write(ctx, c, typ, data) == nil
}

// write writes on c; on failure it closes c (its link reconnects) and
// forgets it.
func (s *relaySlot) write(ctx context.Context, c *client.Conn, typ client.MessageType, data []byte) error {
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	s.wmu.Lock()
	err := c.Write(wctx, typ, data)
	s.wmu.Unlock()
	cancel()
	if err != nil {
		s.clear(c)
		c.CloseNow()
	}
	return err
}

// newHTTPClient returns the agent's HTTP client: its own transport, the
// environment's proxy, and TCP keep-alive probes that find a silently dead
// relay within about half a minute.
func newHTTPClient() *http.Client {
	var http1 http.Protocols
	http1.SetHTTP1(true) // websockets need HTTP/1.1
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           keepAliveDialer().DialContext,
		Protocols:             &http1,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: connectTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
	}}
}
