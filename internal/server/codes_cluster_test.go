package server_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// TestACodeIsUsableOnAnyNode: two whole nodes on one in-memory bus network.
// A code issued by node a opens a websocket on node b (taken from a over
// the bus), which then reads what a's writer sends; the code is used up on
// both nodes; a code of a node that is gone is refused at once with 401.
func TestACodeIsUsableOnAnyNode(t *testing.T) {
	nodes := memCluster(t, 2)
	a, b := nodes["a"], nodes["b"]
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// The code comes from a; the handshake goes to b.
	uri, err := client.Access(ctx, a.URL, "lab/cam", a.Token(t, "lab/cam", auth.ScopeRead), nil)
	if err != nil {
		t.Fatal(err)
	}
	if node, ok := wire.ParseCode(codeOf(t, uri)); !ok || node != "a" {
		t.Fatalf("a's code names node %q", node)
	}
	onB := onNode(t, uri, b)
	reader, resp, err := websocket.Dial(ctx, onB, nil)
	if err != nil {
		t.Fatalf("a's code on b: %v", err)
	}
	defer reader.CloseNow()
	if got := resp.Header.Get(wire.HeaderNode); got != "b" {
		t.Errorf("the handshake on b names node %q", got)
	}
	wait.For(t, "the reader on b", func() bool { return b.TopicConns("lab/cam") == 1 })

	// a's writer reaches the reader on b.
	writer := a.Dial(t, "lab/cam", auth.ScopeWrite)
	if err := writer.Write(ctx, client.Text, []byte("frame 1")); err != nil {
		t.Fatal(err)
	}
	if typ, data, err := reader.Read(ctx); err != nil || typ != websocket.MessageText || string(data) != "frame 1" {
		t.Fatalf("the reader on b read %v %q, %v", typ, data, err)
	}

	// The code is used up: on b again, and on a.
	for _, again := range []string{onB, uri} {
		if status, code := handshakeRefusal(t, ctx, again); status != http.StatusUnauthorized || code != string(wire.ErrorCodeInvalid) {
			t.Errorf("the used code again at %s: %d %s, want 401 code_invalid", again, status, code)
		}
	}

	// A node that is gone answers at once: 401, not a timeout.
	gone := strings.Replace(uri, codeOf(t, uri), strings.Split(codeOf(t, uri), ".")[0]+".c", 1)
	if status, code := handshakeRefusal(t, ctx, gone); status != http.StatusUnauthorized || code != string(wire.ErrorCodeInvalid) {
		t.Errorf("a code of a node that is gone: %d %s, want 401 code_invalid", status, code)
	}
}

// codeOf returns the code in a websocket URI.
func codeOf(t *testing.T, uri string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("code")
}

// onNode returns uri with its host replaced by node's.
func onNode(t *testing.T, uri string, node *servertest.Server) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	n, err := url.Parse(node.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = n.Host
	return u.String()
}

// handshakeRefusal attempts a websocket handshake that must be refused and
// returns the status and error code.
func handshakeRefusal(t *testing.T, ctx context.Context, uri string) (int, string) {
	t.Helper()
	c, err := client.DialURI(ctx, uri, nil)
	if err == nil {
		c.CloseNow()
		t.Fatalf("%s: handshake accepted", uri)
	}
	var ae *client.AccessError
	if !errors.As(err, &ae) {
		t.Fatalf("%s: %v, want an access error", uri, err)
	}
	return ae.Status, string(ae.Code)
}
