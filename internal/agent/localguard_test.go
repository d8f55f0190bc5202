package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// browserRequest sends a request as a browser would for a page: with the
// given headers (Host overrides the request's Host) and returns the status
// and the error code of the JSON body.
func browserRequest(t *testing.T, method, url string, body []byte, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if resp.StatusCode >= 400 && (json.Unmarshal(b, &e) != nil || resp.Header.Get("Content-Type") != "application/json") {
		t.Errorf("%s %s: %d with a body that is not a JSON error: %q", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, e.Error.Code
}

// TestHTTPPushRefusesBrowserPages performs the attack of issue 12 item 7:
// while ffmpeg pushes to a feed, a web page shown on the camera PC sends a
// "simple" cross-site POST to the local listener. It is refused with 403
// before it touches the feed: the real push is not cut off and nothing of
// the page's reaches the topic. Requests from programs (no Origin, no
// Sec-Fetch-Site) and from the listener's own origin still work.
func TestHTTPPushRefusesBrowserPages(t *testing.T) {
	r := startRelay(t)
	a, base := startPush(t, r, DefaultChunk, "video0", "data")
	host := strings.TrimPrefix(base, "http://")
	_, port, _ := strings.Cut(host, ":")
	user := r.Dial(t, "lab/video0", "read", "write")
	wait.For(t, "user on the topic", func() bool { return r.TopicConns("lab/video0") == 2 })

	// The real push: ffmpeg sends a chunked body that never ends.
	pr, pw := io.Pipe()
	defer pw.Close()
	pushed := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/ts/video0", "video/mp2t", pr)
		if err != nil {
			pushed <- -1
			return
		}
		resp.Body.Close()
		pushed <- resp.StatusCode
	}()
	first := tsStream(3)
	pw.Write(first)
	if got, _ := readN(t, user, len(first)); !bytes.Equal(got, first) {
		t.Fatal("the real push's first packets differ")
	}

	// A page's packets: recognisable, 0x47 then 'E'.
	evil := bytes.Repeat(append([]byte{0x47}, bytes.Repeat([]byte("E"), 187)...), 4)
	for _, tc := range []struct {
		name, path string
		headers    map[string]string
	}{
		{"foreign origin", "/ts/video0", map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"}},
		{"foreign origin, push", "/push/video0", map[string]string{"Origin": "https://evil.example:8443"}},
		{"opaque origin", "/ts/video0", map[string]string{"Origin": "null"}},
		{"another port on this host", "/ts/video0", map[string]string{"Origin": "http://127.0.0.1:3000"}},
		{"cross-site fetch", "/push/video0", map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"same-site fetch", "/ts/video0", map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"own origin but cross-site", "/ts/video0", map[string]string{"Origin": base, "Sec-Fetch-Site": "cross-site"}},
		{"DNS rebinding", "/ts/video0", map[string]string{"Host": "rebind.example:" + port, "Origin": "http://rebind.example:" + port, "Sec-Fetch-Site": "same-origin"}},
		{"DNS rebinding, no Origin", "/ts/video0", map[string]string{"Host": "rebind.example:" + port}},
	} {
		for _, method := range []string{"POST", "PUT"} {
			st, code := browserRequest(t, method, base+tc.path, evil, tc.headers)
			if st != http.StatusForbidden || code != crossOriginCode {
				t.Errorf("%s (%s): %d %q, want 403 %s", tc.name, method, st, code, crossOriginCode)
			}
		}
	}
	// A browser's websocket from a foreign page is refused too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws://"+host+"/ws/video0", &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {"http://evil.example"}, "Sec-Fetch-Site": {"cross-site"}}})
	if err == nil {
		ws.CloseNow()
		t.Fatal("a foreign page's websocket was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign websocket: %v, %v", resp, err)
	}

	// The real push goes on, and the topic holds its packets only.
	second := tsStream(5)[3*188:]
	pw.Write(second)
	if got, _ := readN(t, user, len(second)); !bytes.Equal(got, second) {
		t.Fatal("the topic got something else than the real push's packets: the page's data reached it")
	}
	select {
	case code := <-pushed:
		t.Fatalf("the real push was cut off (%d)", code)
	default:
	}
	// The byte count is added after the relay took the write, so the user
	// can hold the packets a moment before the count shows them.
	pushedBytes := int64(len(first) + len(second))
	wait.For(t, "the push's bytes counted", func() bool { return status(t, a, "cams/video0").BytesToRelay == pushedBytes })
	if st := status(t, a, "cams/video0"); *st.Local.Active != 1 || st.BytesToRelay != pushedBytes {
		t.Fatalf("status %+v, local %+v", st, *st.Local)
	}
	pw.Close()
	if code := <-pushed; code != http.StatusNoContent {
		t.Fatalf("the real push ended with %d", code)
	}

	// Programs and the listener's own origin are served.
	for _, h := range []map[string]string{
		nil, // ffmpeg, curl
		{"Origin": base},
		{"Origin": "http://localhost:" + port, "Host": "localhost:" + port},
		{"Sec-Fetch-Site": "none"},
		{"Sec-Fetch-Site": "same-origin", "Origin": base},
		{"Host": "localhost:" + port},
	} {
		if st, code := browserRequest(t, "POST", base+"/push/data", []byte("x"), h); st != http.StatusNoContent {
			t.Errorf("headers %v: %d %q, want 204", h, st, code)
		}
	}
}

// TestStatusRefusesBrowserPages: the status listener answers programs
// (Prometheus, curl) but not a page of another origin, nor one whose DNS
// name was rebound to the loopback address.
func TestStatusRefusesBrowserPages(t *testing.T) {
	a, err := New(&Config{URL: "http://127.0.0.1:1", TokenFile: writeFile(t, "tok", "x.y.z"),
		Streams: []StreamConfig{{Name: "s", Kind: KindTCP, Topic: "t", Addr: "127.0.0.1:1"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.StatusHandler()) // 127.0.0.1:0
	defer srv.Close()
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	for _, path := range []string{"/status", "/metrics"} {
		for _, h := range []map[string]string{
			{"Origin": "http://evil.example"},
			{"Sec-Fetch-Site": "cross-site"},
			{"Host": "rebind.example:" + port, "Sec-Fetch-Site": "same-origin"},
		} {
			if st, code := browserRequest(t, "GET", srv.URL+path, nil, h); st != http.StatusForbidden || code != crossOriginCode {
				t.Errorf("GET %s %v: %d %q, want 403", path, h, st, code)
			}
		}
		for _, h := range []map[string]string{nil, {"Host": "localhost:" + port}, {"Sec-Fetch-Site": "none"}} {
			if st, code := browserRequest(t, "GET", srv.URL+path, nil, h); st != http.StatusOK {
				t.Errorf("GET %s %v: %d %q, want 200", path, h, st, code)
			}
		}
	}
}
