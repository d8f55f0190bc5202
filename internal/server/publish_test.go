package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// publishMaxMessage is the relay's message limit in these tests.
const publishMaxMessage = 1024

func startPublishNode(t *testing.T) *servertest.Server {
	return servertest.Start(t, func(c *server.Config, d *server.Deps) {
		c.Relay.MaxMessageBytes = publishMaxMessage
		c.Relay.SendQueueBytes = 64 << 10
	})
}

// readMessage reads the next message of c, failing after 5 s.
func readMessage(t *testing.T, c *client.Conn) (client.MessageType, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	typ, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, string(data)
}

// postPublish posts body with contentType to the publish endpoint and
// returns the status and the error code of a refusal.
func postPublish(t *testing.T, s *servertest.Server, tok, query, contentType string, body []byte) (int, wire.ErrorCode) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+wire.PublishPath+query, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	var e struct {
		Error struct{ Code wire.ErrorCode } `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("status %d without a JSON error: %s", resp.StatusCode, b)
	}
	return resp.StatusCode, e.Error.Code
}

// TestHTTPPublishReachesWebsocketReaders: text and binary messages posted
// over HTTP (client.Publish, and a JSON object) reach a websocket reader of
// the topic, with their types, and are answered with the readers they were
// queued for.
func TestHTTPPublishReachesWebsocketReaders(t *testing.T) {
	s := startPublishNode(t)
	reader := s.Dial(t, "lab", auth.ScopeRead)
	writer := s.Token(t, "lab", auth.ScopeWrite)
	ctx := t.Context()

	res, err := client.Publish(ctx, s.URL, writer, "lab", client.Text, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res != (wire.PublishResult{Topic: "lab", Queued: 1}) {
		t.Fatalf("text: %+v, want queued for 1 reader, not forwarded", res)
	}
	if typ, data := readMessage(t, reader); typ != client.Text || data != "hello" {
		t.Fatalf("reader got %v %q, want text hello", typ, data)
	}
	if _, err := client.Publish(ctx, s.URL, writer, "lab", client.Binary, []byte{0, 1, 0xff}, nil); err != nil {
		t.Fatal(err)
	}
	if typ, data := readMessage(t, reader); typ != client.Binary || data != "\x00\x01\xff" {
		t.Fatalf("reader got %v %q, want binary 00 01 ff", typ, data)
	}
	// One JSON object, its topic in the query.
	if st, code := postPublish(t, s, writer, "?topic=lab", "application/json", []byte(`{"data_b64":"AAI="}`)); st != 200 {
		t.Fatalf("JSON object: %d %s", st, code)
	}
	if typ, data := readMessage(t, reader); typ != client.Binary || data != "\x00\x02" {
		t.Fatalf("reader got %v %q, want binary 00 02", typ, data)
	}
	// A topic nobody reads: accepted, queued for nobody.
	if res, err := client.Publish(ctx, s.URL, writer, "lab", client.Text, nil, nil); err != nil || res.Queued != 1 {
		t.Fatalf("empty message: %+v %v", res, err)
	}
	readMessage(t, reader)
}

// TestHTTPPublishBatch: a batch answers each item in order, to topics a
// pattern token grants; a batch with one refused item publishes nothing.
func TestHTTPPublishBatch(t *testing.T) {
	s := startPublishNode(t)
	one := s.Dial(t, "lab/one", auth.ScopeRead)
	two := s.Dial(t, "lab/two", auth.ScopeRead)
	alsoTwo := s.Dial(t, "lab/two", auth.ScopeRead, auth.ScopeWrite)
	writer := s.Token(t, "lab/*", auth.ScopeWrite)
	text, bin := "first", base64.StdEncoding.EncodeToString([]byte{7, 8})

	res, err := client.PublishBatch(t.Context(), s.URL, writer, []wire.PublishItem{
		{Topic: "lab/one", Data: &text},
		{Topic: "lab/two", DataB64: &bin},
		{Topic: "lab/nobody", Data: &text},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.PublishResult{{Topic: "lab/one", Queued: 1}, {Topic: "lab/two", Queued: 2}, {Topic: "lab/nobody"}}
	if len(res) != len(want) {
		t.Fatalf("results %+v, want %+v", res, want)
	}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("result %d: %+v, want %+v", i, res[i], want[i])
		}
	}
	if typ, data := readMessage(t, one); typ != client.Text || data != "first" {
		t.Fatalf("lab/one got %v %q", typ, data)
	}
	for _, c := range []*client.Conn{two, alsoTwo} {
		if typ, data := readMessage(t, c); typ != client.Binary || data != "\x07\x08" {
			t.Fatalf("lab/two got %v %q", typ, data)
		}
	}

	// The second item is another writer's topic: nothing goes out.
	refused := []byte(`[{"topic":"lab/one","data":"not sent"},{"topic":"elsewhere","data":"x"}]`)
	if st, code := postPublish(t, s, writer, "", "application/json", refused); st != 403 || code != wire.ErrorTopicForbidden {
		t.Fatalf("batch with a forbidden item: %d %s, want 403 topic_forbidden", st, code)
	}
	if _, err := client.Publish(t.Context(), s.URL, writer, "lab/one", client.Text, []byte("after"), nil); err != nil {
		t.Fatal(err)
	}
	if _, data := readMessage(t, one); data != "after" {
		t.Fatalf("lab/one got %q first: a refused batch was published in part", data)
	}

	var big bytes.Buffer
	big.WriteString("[")
	for i := range wire.MaxPublishBatch + 1 {
		if i > 0 {
			big.WriteString(",")
		}
		big.WriteString(`{"topic":"lab/one","data":"x"}`)
	}
	big.WriteString("]")
	if st, code := postPublish(t, s, writer, "", "application/json", big.Bytes()); st != 413 || code != wire.ErrorBatchTooLarge {
		t.Fatalf("%d items: %d %s, want 413 batch_too_large", wire.MaxPublishBatch+1, st, code)
	}
	for _, body := range []string{`[]`, `[{"topic":"lab/one"}]`, `[{"topic":"lab/one","data":"a","data_b64":"YQ=="}]`, `[{"topic":"lab/one","data_b64":"%%"}]`, `{"data":"no topic"}`, `[`} {
		if st, code := postPublish(t, s, writer, "", "application/json", []byte(body)); st != 400 || code != wire.ErrorInvalidPublish {
			t.Fatalf("%s: %d %s, want 400 invalid_publish", body, st, code)
		}
	}
}

// TestHTTPPublishRefusals: publishing needs write on the topic, a session
// token that is not revoked, a message within the relay's limit, and a
// topic that is not the system's.
func TestHTTPPublishRefusals(t *testing.T) {
	s := startPublishNode(t)
	reader := s.Dial(t, "lab", auth.ScopeRead)
	writer := s.Token(t, "lab", auth.ScopeWrite)
	refuse := func(what string, tok, query, contentType string, body []byte, status int, want wire.ErrorCode) {
		t.Helper()
		if st, code := postPublish(t, s, tok, query, contentType, body); st != status || code != want {
			t.Fatalf("%s: %d %s, want %d %s", what, st, code, status, want)
		}
	}
	refuse("no token", "", "?topic=lab", "text/plain", []byte("x"), 401, wire.ErrorMissingToken)
	refuse("read only", s.Token(t, "lab", auth.ScopeRead), "?topic=lab", "text/plain", []byte("x"), 403, wire.ErrorScopeForbidden)
	refuse("another topic", writer, "?topic=other", "text/plain", []byte("x"), 403, wire.ErrorTopicForbidden)
	refuse("no topic", writer, "", "text/plain", []byte("x"), 400, wire.ErrorInvalidPublish)
	refuse("bad topic", writer, "?topic=a%20b", "text/plain", []byte("x"), 400, wire.ErrorInvalidTopic)
	refuse("text not UTF-8", writer, "?topic=lab", "text/plain", []byte{0xff}, 400, wire.ErrorInvalidPublish)
	refuse("content type", writer, "?topic=lab", "image/png", []byte("x"), 415, wire.ErrorUnsupportedMediaType)
	refuse("too large", writer, "?topic=lab", "application/octet-stream", make([]byte, publishMaxMessage+1), 413, wire.ErrorMessageTooLarge)
	long := strings.Repeat("y", publishMaxMessage+1)
	refuse("too large in JSON", writer, "", "application/json", []byte(`[{"topic":"lab","data":"`+long+`"}]`), 413, wire.ErrorMessageTooLarge)
	refuse("system topic", s.Token(t, control.StatsTopic, auth.ScopeWrite, auth.ScopeStats), "?topic="+control.StatsTopic, "text/plain", []byte("x"), 403, wire.ErrorTopicReadOnly)
	shell := s.Claims("lab", auth.ScopeWrite)
	shell.Prefix = wire.PrefixShell
	refuse("shell token", s.Sign(t, shell), "?topic=lab", "text/plain", []byte("x"), 403, wire.ErrorPublishNotShared)
	var ae *client.AccessError
	if _, err := client.Publish(t.Context(), s.URL, writer, "lab", client.Binary, make([]byte, publishMaxMessage+1), nil); !errors.As(err, &ae) || ae.Status != 413 || ae.Code != wire.ErrorMessageTooLarge {
		t.Fatalf("client.Publish too large: %v", err)
	}
	// A message of exactly the limit goes through.
	if res, err := client.Publish(t.Context(), s.URL, writer, "lab", client.Binary, make([]byte, publishMaxMessage), nil); err != nil || res.Queued != 1 {
		t.Fatalf("message at the limit: %+v %v", res, err)
	}
	if _, data := readMessage(t, reader); len(data) != publishMaxMessage {
		t.Fatalf("reader got %d bytes first, want the %d-byte message: a refused one went out", len(data), publishMaxMessage)
	}

	// Revoked: the subject, through the revocations API.
	c := s.Claims("lab", auth.ScopeWrite)
	c.Subject = "mallory"
	mallory := s.Sign(t, c)
	if _, err := client.Publish(t.Context(), s.URL, mallory, "lab", client.Text, []byte("before"), nil); err != nil {
		t.Fatal(err)
	}
	readMessage(t, reader)
	admin := s.Claims("", auth.ScopeAdmin)
	admin.Subject, admin.Prefix = "operator", ""
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/api/v1/revocations", strings.NewReader(`{"kind":"subject","value":"mallory","ttl":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+s.Sign(t, admin))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	refuse("revoked subject", mallory, "?topic=lab", "text/plain", []byte("x"), 403, wire.ErrorTokenRevoked)
}

// TestHTTPPublishAcrossNodes: a message posted on node a reaches a reader
// on node b, through the bus, and a's answer says it was forwarded.
func TestHTTPPublishAcrossNodes(t *testing.T) {
	nodes := memCluster(t, 2)
	a, b := nodes["a"], nodes["b"]
	reader := b.Dial(t, "lab", auth.ScopeRead)
	wait.For(t, "node a knows b reads lab", func() bool { return a.Relay().ReadElsewhere("lab") })
	res, err := client.Publish(t.Context(), a.URL, a.Token(t, "lab", auth.ScopeWrite), "lab", client.Text, []byte("from a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res != (wire.PublishResult{Topic: "lab", Queued: 0, Forwarded: true}) {
		t.Fatalf("publish on a: %+v, want forwarded, queued for nobody on a", res)
	}
	if typ, data := readMessage(t, reader); typ != client.Text || data != "from a" {
		t.Fatalf("reader on b got %v %q", typ, data)
	}
}

// countingTransport counts the requests it carries.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// TestHTTPPublishUsesTheClientOptions: client.Publish and PublishBatch
// send through Options.HTTPClient, with Options.Header.
func TestHTTPPublishUsesTheClientOptions(t *testing.T) {
	s := servertest.Start(t)
	writer := s.Token(t, "lab", auth.ScopeWrite)
	ct := &countingTransport{}
	opts := &client.Options{HTTPClient: &http.Client{Transport: ct}, Header: http.Header{"User-Agent": {"publisher/1"}}}
	if _, err := client.Publish(t.Context(), s.URL, writer, "lab", client.Text, []byte("x"), opts); err != nil {
		t.Fatal(err)
	}
	text := "y"
	if _, err := client.PublishBatch(t.Context(), s.URL, writer, []wire.PublishItem{{Topic: "lab", Data: &text}}, opts); err != nil {
		t.Fatal(err)
	}
	if got := ct.n.Load(); got != 2 {
		t.Fatalf("%d requests through the given HTTP client, want 2", got)
	}
}
