package agent

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

func startPush(t *testing.T, r *testRelay, chunk int, feeds ...string) (*Agent, string) {
	t.Helper()
	sc := StreamConfig{Name: "cams", Kind: KindHTTPPush, Listen: "127.0.0.1:0", Chunk: chunk}
	for _, f := range feeds {
		sc.Feeds = append(sc.Feeds, FeedConfig{Name: f, Topic: "lab/" + f})
	}
	a := runAgent(t, &Config{URL: r.URL, TokenFile: writeFile(t, "tok", r.token("lab/*", "session", time.Hour, "read", "write")),
		Streams: []StreamConfig{sc}}, Options{})
	for _, f := range feeds {
		wait.For(t, f+" connected", func() bool { return status(t, a, "cams/"+f).Connected })
	}
	return a, "http://" + a.streams[0].(*pushStream).Addr().String()
}

// TestHTTPPushTS: an MPEG-TS body pushed with chunked transfer encoding, in
// writes that split packets, arrives in order as messages of whole packets
// no larger than the chunk; other content goes in chunks of the chunk size.
func TestHTTPPushTS(t *testing.T) {
	r := startRelay(t)
	a, base := startPush(t, r, 4096, "video0", "data")
	video, data := r.Dial(t, "lab/video0", "read", "write"), r.Dial(t, "lab/data", "read", "write")
	wait.For(t, "users on the topics", func() bool { return r.TopicConns("lab/video0") == 2 && r.TopicConns("lab/data") == 2 })

	body := tsStream(500)
	pr, pw := io.Pipe()
	respc := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/ts/video0", pr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			close(respc)
			return
		}
		respc <- resp
	}()
	go func() {
		for p := body; len(p) > 0; {
			n := min(len(p), 1000)
			pw.Write(p[:n]) // ffmpeg-like: writes that do not respect packets
			p = p[n:]
		}
		pw.Close()
	}()
	got, msgs := readN(t, video, len(body))
	if !bytes.Equal(got, body) {
		t.Fatal("bytes differ")
	}
	for _, m := range msgs {
		if len(m)%188 != 0 || len(m) > 4096-4096%188 {
			t.Fatalf("message of %d bytes", len(m))
		}
	}
	if resp := <-respc; resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("push response %v", resp)
	}

	// Other content: fixed chunks. video/mp2t on /push/ is TS.
	raw := bytes.Repeat([]byte("0123456789"), 1000)
	resp, err := http.Post(base+"/push/data", "application/octet-stream", bytes.NewReader(raw))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("raw push: %v %v", resp, err)
	}
	got, msgs = readN(t, data, len(raw))
	if !bytes.Equal(got, raw) {
		t.Fatal("raw bytes differ")
	}
	for _, m := range msgs {
		if len(m) > 4096 {
			t.Fatalf("raw message of %d bytes", len(m))
		}
	}
	resp, err = http.Post(base+"/push/video0", "video/mp2t", bytes.NewReader(tsStream(30)))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("mp2t push: %v %v", resp, err)
	}
	if _, msgs = readN(t, video, 30*188); len(msgs[0])%188 != 0 || len(msgs[0]) == 4096 {
		t.Fatalf("video/mp2t not chunked as TS: %d", len(msgs[0]))
	}

	if resp, _ := http.Post(base+"/ts/nope", "video/mp2t", strings.NewReader("x")); resp.StatusCode != 404 {
		t.Fatalf("unknown feed: %d", resp.StatusCode)
	}
	wait.For(t, "status counted", func() bool { return status(t, a, "cams/video0").BytesToRelay == int64(len(body)+30*188) })
	if st := status(t, a, "cams/video0"); st.Drops != 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestHTTPPushNewestWins: a second push to a feed interrupts the first.
func TestHTTPPushNewestWins(t *testing.T) {
	r := startRelay(t)
	_, base := startPush(t, r, DefaultChunk, "v")
	user := r.Dial(t, "lab/v", "read", "write")
	wait.For(t, "user on the topic", func() bool { return r.TopicConns("lab/v") == 2 })
	pr, pw := io.Pipe()
	defer pw.Close()
	first := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/ts/v", "video/mp2t", pr)
		if err != nil {
			first <- -1
			return
		}
		first <- resp.StatusCode
	}()
	pw.Write(tsStream(1))
	readN(t, user, 188)
	resp, err := http.Post(base+"/ts/v", "video/mp2t", bytes.NewReader(tsStream(2)))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("second push: %v %v", resp, err)
	}
	readN(t, user, 2*188)
	select {
	case code := <-first:
		if code != http.StatusConflict && code != -1 {
			t.Fatalf("first push ended with %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("first push not interrupted")
	}
}

// TestHTTPPushLocalWebsocket: /ws/{feed} is bridged both ways, message
// types kept; an oversized local message is split, not dropped.
func TestHTTPPushLocalWebsocket(t *testing.T) {
	r := startRelay(t)
	a, base := startPush(t, r, DefaultChunk, "ctl")
	user := r.Dial(t, "lab/ctl", "read", "write")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	local, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws/ctl", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer local.CloseNow()
	local.SetReadLimit(-1)
	wait.For(t, "local websocket registered", func() bool { return *status(t, a, "cams/ctl").Local.Active == 1 })
	wait.For(t, "user on the topic", func() bool { return r.TopicConns("lab/ctl") == 2 })

	local.Write(ctx, websocket.MessageText, []byte(`{"set":1}`))
	typ, data, err := user.Read(ctx)
	if err != nil || typ != client.Text || string(data) != `{"set":1}` {
		t.Fatalf("local → user: %v %q %v", typ, data, err)
	}
	user.Write(ctx, client.Binary, []byte{1, 2, 3})
	wtyp, data, err := local.Read(ctx)
	if err != nil || wtyp != websocket.MessageBinary || !bytes.Equal(data, []byte{1, 2, 3}) {
		t.Fatalf("user → local: %v %v %v", wtyp, data, err)
	}
	big := bytes.Repeat([]byte{7}, maxLocalMessage+1000)
	local.Write(ctx, websocket.MessageBinary, big)
	got, msgs := readN(t, user, len(big))
	if !bytes.Equal(got, big) || len(msgs) != 2 {
		t.Fatalf("oversized message: %d bytes in %d messages", len(got), len(msgs))
	}
	local.Close(websocket.StatusNormalClosure, "")
	wait.For(t, "local websocket gone", func() bool { return *status(t, a, "cams/ctl").Local.Active == 0 })
}

// TestHTTPPushDropsWhileDown: pushed live data is not held while the feed's
// link is down; each chunk is counted as a drop.
func TestHTTPPushDropsWhileDown(t *testing.T) {
	f := newFakeRelay(t)
	f.refuse = func(int64) (int, string) { return 503, "unavailable" }
	a := runAgent(t, &Config{URL: f.url, TokenFile: writeFile(t, "tok", "x.y.z"), Streams: []StreamConfig{{
		Name: "cams", Kind: KindHTTPPush, Listen: "127.0.0.1:0", Feeds: []FeedConfig{{Name: "v", Topic: "t"}}}}}, Options{})
	base := "http://" + a.streams[0].(*pushStream).Addr().String()
	resp, err := http.Post(base+"/ts/v", "", bytes.NewReader(tsStream(10)))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("push: %v %v", resp, err)
	}
	if st := status(t, a, "cams/v"); st.Drops == 0 || st.MessagesToRelay != 0 {
		t.Fatalf("status %+v", st)
	}
}
