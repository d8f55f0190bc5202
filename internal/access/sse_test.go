package access_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Server-sent events (docs/protocol.md "Server-sent events"), over real
// HTTP on loopback against a whole node: the code exchange of the websocket
// path, answered with a read-only event stream.

// sseCode trades token for a one-time code at topic's access endpoint and
// returns the http URL to GET with it.
func sseCode(t *testing.T, s *servertest.Server, topic, token string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/session/"+topic, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		URI string `json:"uri"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
		t.Fatalf("access request: HTTP %d", resp.StatusCode)
	}
	return "http" + strings.TrimPrefix(body.URI, "ws")
}

// sseGet GETs url as an EventSource does, with extra headers (name, value
// pairs); the request ends with ctx.
func sseGet(t *testing.T, ctx context.Context, url string, headers ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// event is one parsed event-stream block: an event (name, data) or a
// comment.
type event struct {
	Name, Data, Comment string
}

// eventReader parses an event stream as the HTML standard does (for what
// the relay sends: event, data, comments; CR LF, CR and LF end lines).
type eventReader struct{ r *bufio.Reader }

// next returns the next event or comment; its error when the stream ends.
func (er eventReader) next() (event, error) {
	var ev event
	var data []string
	seen := false
	for {
		line, err := er.r.ReadString('\n')
		if err != nil {
			return event{}, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if !seen {
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev, nil
		case strings.HasPrefix(line, ":"):
			return event{Comment: strings.TrimPrefix(line, ":")}, nil
		}
		seen = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Name = value
		case "data":
			data = append(data, value)
		}
	}
}

// nextEvent skips heartbeat comments.
func (er eventReader) nextEvent(t *testing.T) event {
	t.Helper()
	for {
		ev, err := er.next()
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		if ev.Comment == "" {
			return ev
		}
	}
}

// openStream opens an event stream on topic with a token of scopes.
func openStream(t *testing.T, ctx context.Context, s *servertest.Server, topic, token string) (eventReader, *http.Response) {
	t.Helper()
	resp := sseGet(t, ctx, sseCode(t, s, topic, token))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("event stream: %+v", readRefusal(t, resp))
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return eventReader{bufio.NewReader(resp.Body)}, resp
}

// TestEventStreamRelaysTextAndBinaryInOrder: what a websocket writer sends
// arrives on the stream in order, text as data lines (a message of several
// lines round-trips, line breaks as LF), binary as base64 events.
func TestEventStreamRelaysTextAndBinaryInOrder(t *testing.T) {
	s := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	writer := s.Dial(t, "lab", auth.ScopeWrite)
	er, _ := openStream(t, ctx, s, "lab", s.Token(t, "lab", auth.ScopeRead))
	bin := []byte{0, 1, 2, 0xff, '\n'}
	sent := []struct {
		typ  client.MessageType
		data []byte
		want event
	}{
		{client.Text, []byte("first"), event{Data: "first"}},
		{client.Binary, bin, event{Name: "binary", Data: base64.StdEncoding.EncodeToString(bin)}},
		{client.Text, []byte("line one\nline two\r\n line three\n"), event{Data: "line one\nline two\n line three\n"}},
		{client.Text, []byte(""), event{Data: ""}},
		{client.Text, []byte("last: ünïcode"), event{Data: "last: ünïcode"}},
	}
	for _, m := range sent {
		if err := writer.Write(ctx, m.typ, m.data); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range sent {
		if got := er.nextEvent(t); got != m.want {
			t.Fatalf("event %d: %+v, want %+v", i, got, m.want)
		}
	}
}

// TestEventStreamHeartbeat: the stream carries a ": ping" comment at its
// own heartbeat interval (--sse-heartbeat, not the websockets' ping
// interval), so proxies keep it open; and it outlives the server's request
// timeout (it is not cut after RequestTimeout).
func TestEventStreamHeartbeat(t *testing.T) {
	const requestTimeout = 300 * time.Millisecond
	s := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.Relay.PingInterval = time.Hour // websockets: not within the test
		c.SSEHeartbeat = 50 * time.Millisecond
		c.RequestTimeout = requestTimeout
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	er, _ := openStream(t, ctx, s, "beat", s.Token(t, "beat", auth.ScopeRead))
	start := time.Now()
	pings := 0
	for time.Since(start) < 3*requestTimeout { // bounded by ctx as well
		ev, err := er.next()
		if err != nil {
			t.Fatalf("after %d pings and %v: %v", pings, time.Since(start), err)
		}
		if ev.Comment != " ping" {
			t.Fatalf("got %+v, want the comment \": ping\"", ev)
		}
		pings++
	}
	writer := s.Dial(t, "beat", auth.ScopeWrite)
	if err := writer.Write(ctx, client.Text, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if got := er.nextEvent(t); got.Data != "still here" {
		t.Fatalf("after the request timeout: %+v", got)
	}
}

// TestEventStreamRevocationCloses: revoking the reader's subject ends the
// stream with a close event carrying 4003, then the end of the body.
func TestEventStreamRevocationCloses(t *testing.T) {
	s := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	c := s.Claims("rv", auth.ScopeRead)
	c.Subject = "sse-reader"
	er, _ := openStream(t, ctx, s, "rv", s.Sign(t, c))
	admin := s.Claims("", auth.ScopeAdmin)
	admin.Subject, admin.Prefix = "operator", ""
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/api/v1/revocations", strings.NewReader(`{"kind":"subject","value":"sse-reader","reason":"test","ttl":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+s.Sign(t, admin))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
	ev := er.nextEvent(t)
	var closed struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	if ev.Name != "close" || json.Unmarshal([]byte(ev.Data), &closed) != nil || closed.Code != 4003 {
		t.Fatalf("after the revocation: %+v, want a close event with code 4003", ev)
	}
	if _, err := er.next(); err != io.EOF {
		t.Fatalf("after the close event: %v, want the end of the stream", err)
	}
	wait.For(t, "the relay lets go of the stream", func() bool { return s.TopicConns("rv") == 0 })
}

// TestEventStreamCodeSingleUse: a code opens one stream; used again it is
// code_invalid, as on the websocket path.
func TestEventStreamCodeSingleUse(t *testing.T) {
	s := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	url := sseCode(t, s, "once", s.Token(t, "once", auth.ScopeRead))
	first := sseGet(t, ctx, url)
	defer first.Body.Close()
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first use: %+v", readRefusal(t, first))
	}
	if got := readRefusal(t, sseGet(t, ctx, url)); got.Status != http.StatusUnauthorized || got.Code != "code_invalid" {
		t.Fatalf("second use: %+v, want 401 code_invalid", got)
	}
}

// TestEventStreamRefusesAsWebsocket: a bad or missing code gets the
// websocket path's JSON error.
func TestEventStreamRefusesAsWebsocket(t *testing.T) {
	s := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	for _, q := range []string{"?code=garbage", "?code=n1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""} {
		_, _, ws := connect(t, s, "/session/lab"+q, "")
		got := readRefusal(t, sseGet(t, ctx, s.URL+"/session/lab"+q))
		if got.Status != ws.Status || got.Code != ws.Code || got.Status < 400 {
			t.Errorf("%q: event stream %+v, websocket %+v", q, got, ws)
		}
	}
}

// TestEventStreamLastEventIDRefused: Last-Event-ID is refused (no history)
// before the code is used up.
func TestEventStreamLastEventIDRefused(t *testing.T) {
	s := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	url := sseCode(t, s, "resume", s.Token(t, "resume", auth.ScopeRead))
	if got := readRefusal(t, sseGet(t, ctx, url, "Last-Event-ID", "7")); got.Status != http.StatusBadRequest || got.Code != "last_event_id_unsupported" {
		t.Fatalf("Last-Event-ID: %+v, want 400 last_event_id_unsupported", got)
	}
	resp := sseGet(t, ctx, url)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the same code without Last-Event-ID: %+v", readRefusal(t, resp))
	}
}

// TestEventStreamReadOnly: a token that may read and write gets a stream
// the relay holds as read-only; a write-only token is refused.
func TestEventStreamReadOnly(t *testing.T) {
	s := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	if got := readRefusal(t, sseGet(t, ctx, sseCode(t, s, "ro", s.Token(t, "ro", auth.ScopeWrite)))); got.Status != http.StatusForbidden || got.Code != "scope_forbidden" {
		t.Fatalf("write-only token: %+v, want 403 scope_forbidden", got)
	}
	openStream(t, ctx, s, "ro", s.Token(t, "ro", auth.ScopeRead, auth.ScopeWrite))
	conns := s.Relay().Connections()
	if len(conns) != 1 || !conns[0].Info.CanRead || conns[0].Info.CanWrite {
		t.Fatalf("relay connections: %+v, want one read-only", conns)
	}
}

// TestEventStreamShutdown: a node shutting down ends an open stream with a
// close event (1001) and the end of the body, and its shutdown does not
// wait on the stream (the handler returns once the relay closed it).
func TestEventStreamShutdown(t *testing.T) {
	s := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	er, _ := openStream(t, ctx, s, "down", s.Token(t, "down", auth.ScopeRead))
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	ev := er.nextEvent(t)
	if ev.Name != "close" || !strings.Contains(ev.Data, `"code":1001`) {
		t.Fatalf("at shutdown: %+v, want a close event with code 1001", ev)
	}
	if _, err := er.next(); err != io.EOF {
		t.Fatalf("after the close event: %v, want the end of the stream", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// TestEventStreamSlowConsumer: a stream whose client stops reading is a
// slow consumer like a websocket reader: under PolicyClose its full queue
// closes it with 4008 and the relay lets go of it; the body ends with the
// close event, or broken off when the close could not be written in time.
func TestEventStreamSlowConsumer(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.Relay.SlowConsumer = relay.PolicyClose
		c.Relay.MaxMessageBytes = 64 << 10
		c.Relay.SendQueueBytes = 128 << 10
		c.Relay.CloseTimeout = 100 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	_, resp := openStream(t, ctx, s, "slow", s.Token(t, "slow", auth.ScopeRead))
	writer := s.Dial(t, "slow", auth.ScopeWrite)
	msg := []byte(strings.Repeat("x", 32<<10))
	// Loopback buffers take a few MB before writes to the stream stall;
	// 4,000 messages are 128 MB.
	for i := 0; s.TopicConns("slow") == 2; i++ {
		if i == 4000 {
			t.Fatal("the stream was never closed as a slow consumer")
		}
		if err := writer.Write(ctx, client.Text, msg); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, "the relay lets go of the stream", func() bool { return s.TopicConns("slow") == 1 })
	// The body ends: with the close event (4008) if the server could still
	// write it, else broken off (an abort), never complete without it.
	er := eventReader{bufio.NewReader(resp.Body)}
	var last event
	for {
		ev, err := er.next()
		if err == io.EOF {
			if last.Name != "close" || !strings.Contains(last.Data, `"code":4008`) {
				t.Fatalf("the stream ended with %+v, want a close event with code 4008", last)
			}
			break
		}
		if err != nil {
			break // broken off: the slow stream was aborted
		}
		last = ev
	}
}

// TestEventStreamStalledClient: a client that stops reading until its
// connection's buffers are full stalls the stream's writes; the write
// timeout ends the stream, the relay lets go of it, and its response is
// broken off, not ended as complete.
func TestEventStreamStalledClient(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.Relay.WriteTimeout = 200 * time.Millisecond
		c.Relay.CloseTimeout = 100 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	_, resp := openStream(t, ctx, s, "stall", s.Token(t, "stall", auth.ScopeRead))
	writer := s.Dial(t, "stall", auth.ScopeWrite)
	msg := []byte(strings.Repeat("x", 32<<10))
	for i := 0; s.TopicConns("stall") == 2; i++ {
		if i == 4000 { // 128 MB: far more than loopback buffers hold
			t.Fatal("the stalled stream was never closed")
		}
		if err := writer.Write(ctx, client.Text, msg); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, "the relay lets go of the stream", func() bool { return s.TopicConns("stall") == 1 })
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("the stalled stream's body ended as if complete")
	}
}
