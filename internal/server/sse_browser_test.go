package server

import (
	"context"
	"net/http"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestBrowserEventSource: a real Chromium's EventSource reads a topic as
// server-sent events (docs/protocol.md "Server-sent events"): the code from
// an access request, a text message of two lines and a binary one written
// by a websocket writer, in order, then the close event (4003) a revocation
// of the reader's subject ends the stream with.
func TestBrowserEventSource(t *testing.T) {
	s := startServer(t, nil)
	tb := newTab(t, startBrowser(t), "reader")
	tb.run("open the node's origin", chromedp.Navigate(s.url+"/healthz"))
	c := s.claims("lab", auth.ScopeRead)
	c.Subject = "sse-browser"
	eval[bool](tb, "open an EventSource", `(async () => {
		const r = await fetch("/session/lab", {method: "POST", headers: {Authorization: "Bearer `+s.sign(c)+`"}});
		const {uri} = await r.json();
		window.got = [];
		window.opened = false;
		const es = new EventSource(uri.replace(/^ws/, "http"));
		es.onopen = () => { window.opened = true; };
		es.onmessage = e => window.got.push(["text", e.data]);
		es.addEventListener("binary", e => window.got.push(["binary", e.data]));
		es.addEventListener("close", e => { window.got.push(["close", JSON.parse(e.data).code]); es.close(); });
		return true;
	})()`)
	tb.waitJS(stepTimeout, "the stream open", `window.opened`)

	w := s.dial("lab", s.token("lab", auth.ScopeWrite))
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := w.Write(ctx, client.Text, []byte("hello\nworld")); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, client.Binary, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	tb.waitJS(stepTimeout, "two messages", `window.got.length >= 2`)
	status, body := s.api("POST", "/api/v1/revocations", s.adminToken(), `{"kind":"subject","value":"sse-browser","reason":"test","ttl":"1h"}`)
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("revoke: %d %s", status, body)
	}
	got := pollJS[string](tb, stepTimeout, "the close event", `window.got.length >= 3 && JSON.stringify(window.got)`)
	if want := `[["text","hello\nworld"],["binary","AQID"],["close",4003]]`; got != want {
		t.Fatalf("EventSource got %s, want %s", got, want)
	}
}
