package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// echoService runs a local service that echoes every connection.
func echoService(t *testing.T) net.Listener {
	ln := listenLocal(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}

// shellFake is a fake relay for shell sessions: the test holds the host's
// control connection and plays the user on each session's websocket.
type shellFake struct {
	*fakeRelay
	control  chan *websocket.Conn
	mu       sync.Mutex
	sessions map[string]chan userSide
}

// userSide is a session's websocket as the fake hands it to the test; the
// test closes done when it has finished with it.
type userSide struct {
	ws   *websocket.Conn
	done chan struct{}
}

func newShellFake(t *testing.T) *shellFake {
	f := &shellFake{fakeRelay: newFakeRelay(t), control: make(chan *websocket.Conn, 4), sessions: map[string]chan userSide{}}
	f.onConn = func(ws *websocket.Conn, path string) {
		if path != "/shell/lab/ssh" {
			t.Errorf("control connection on %s", path)
			return
		}
		f.control <- ws
		holdOpen(ws, path)
	}
	f.onSession = func(ws *websocket.Conn, id string) {
		u := userSide{ws: ws, done: make(chan struct{})}
		f.session(id) <- u
		<-u.done
	}
	return f
}

func (f *shellFake) session(id string) chan userSide {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := f.sessions[id]
	if ch == nil {
		ch = make(chan userSide, 1)
		f.sessions[id] = ch
	}
	return ch
}

// announce sends a connect message on the control connection.
func (f *shellFake) announce(t *testing.T, ctl *websocket.Conn, id string) {
	msg, _ := json.Marshal(map[string]string{"type": "connect", "session": id,
		"uri": strings.Replace(f.url, "http", "ws", 1) + "/shell/lab/ssh/" + id + "?code=sess-" + id, "extra": "ignored"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ctl.Write(ctx, websocket.MessageText, msg); err != nil {
		t.Fatal(err)
	}
}

// await returns the session's websocket once the host has dialled it;
// the fake keeps it open until the test ends.
func (f *shellFake) await(t *testing.T, id string) *websocket.Conn {
	select {
	case u := <-f.session(id):
		t.Cleanup(func() { close(u.done) })
		return u.ws
	case <-time.After(10 * time.Second):
		t.Fatalf("session %s never dialled", id)
	}
	return nil
}

func startShell(t *testing.T, f *shellFake, addr string) (*Agent, *websocket.Conn) {
	a := runAgent(t, &Config{URL: f.url, TokenFile: writeFile(t, "tok", "x.y.z"), Streams: []StreamConfig{{
		Name: "ssh", Kind: KindShell, Topic: "lab/ssh", Addr: addr}}}, Options{})
	select {
	case ctl := <-f.control:
		return a, ctl
	case <-time.After(10 * time.Second):
		t.Fatal("no control connection")
	}
	return nil, nil
}

// TestShellSessions: 50 concurrent sessions, each with its own local
// connection, each byte back where it belongs.
func TestShellSessions(t *testing.T) {
	const sessions, size = 50, 256 << 10
	f := newShellFake(t)
	a, ctl := startShell(t, f, echoService(t).Addr().String())
	var wg sync.WaitGroup
	for i := range sessions {
		id := fmt.Sprintf("S%02d", i)
		f.announce(t, ctl, id)
		wg.Go(func() {
			ws := f.await(t, id)
			ws.SetReadLimit(-1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			data := make([]byte, size)
			rand.Read(data)
			go func() {
				for p := data; len(p) > 0; {
					n := min(len(p), 10_000)
					if ws.Write(ctx, websocket.MessageBinary, p[:n]) != nil {
						return
					}
					p = p[n:]
				}
			}()
			h := sha256.New()
			for got := 0; got < size; {
				_, b, err := ws.Read(ctx)
				if err != nil {
					t.Errorf("%s: read after %d bytes: %v", id, got, err)
					return
				}
				h.Write(b)
				got += len(b)
			}
			if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
				t.Errorf("%s: bytes differ", id)
			}
			ws.Close(websocket.StatusNormalClosure, "")
		})
	}
	wg.Wait()
	wait.For(t, "sessions closed", func() bool { return *status(t, a, "ssh").Local.Active == 0 })
	st := status(t, a, "ssh")
	if *st.Local.Sessions != sessions || *st.Local.SessionsFailed != 0 || st.BytesToRelay != sessions*size || !st.Connected {
		t.Fatalf("status %+v %+v", st, *st.Local)
	}
}

// TestShellServiceEnds: when the local service closes, the user gets its
// last bytes, then a normal close; the session outlives the control
// connection that announced it.
func TestShellServiceEnds(t *testing.T) {
	ln := listenLocal(t)
	f := newShellFake(t)
	_, ctl := startShell(t, f, ln.Addr().String())
	f.announce(t, ctl, "A")
	svc := accept(t, ln)
	ws := f.await(t, "A")
	ctl.Close(websocket.StatusGoingAway, "control gone") // the session stays
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws.Write(ctx, websocket.MessageBinary, []byte("ls\n"))
	buf := make([]byte, 3)
	svc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(svc, buf); err != nil || string(buf) != "ls\n" {
		t.Fatalf("user → service: %q %v", buf, err)
	}
	svc.Write([]byte("bye\n"))
	svc.Close()
	_, data, err := ws.Read(ctx)
	if err != nil || string(data) != "bye\n" {
		t.Fatalf("last bytes: %q %v", data, err)
	}
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after the service closed: %v", err)
	}
}

// TestShellLocalDown: when the local service is down the session is not
// dialled (the relay closes the user with 4004) and the failure is counted.
func TestShellLocalDown(t *testing.T) {
	ln := listenLocal(t)
	addr := ln.Addr().String()
	ln.Close()
	f := newShellFake(t)
	a, ctl := startShell(t, f, addr)
	f.announce(t, ctl, "B")
	wait.For(t, "failure counted", func() bool { return *status(t, a, "ssh").Local.SessionsFailed == 1 })
	st := status(t, a, "ssh")
	if !strings.Contains(st.Local.LastError, "refused") || f.accepts.Load() != 1 {
		t.Fatalf("status %+v, %d websockets", *st.Local, f.accepts.Load())
	}
	// Bad announcements are ignored; the control connection stays.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctl.Write(ctx, websocket.MessageText, []byte(`{"type":"hello"}`))
	ctl.Write(ctx, websocket.MessageText, []byte(`not json`))
	ctl.Write(ctx, websocket.MessageText, []byte(`{"type":"connect","session":"C","uri":"http://evil/x"}`))
	wait.For(t, "bad uri counted", func() bool { return *status(t, a, "ssh").Local.SessionsFailed == 2 })
	if !status(t, a, "ssh").Connected {
		t.Fatal("control connection dropped")
	}
}

// TestShellThroughRelay: the host side against the real relay: users on
// shell/{topic} each get their own local connection, bytes intact both
// ways; without a host a user is refused with host_unavailable.
func TestShellThroughRelay(t *testing.T) {
	const sessions, size = 20, 1 << 20
	r := startRelay(t)
	userTok := r.token("lab/ssh", ShellPrefix, time.Hour, "client")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := &client.Options{Prefix: ShellPrefix}
	if _, err := client.Dial(ctx, r.URL, "lab/ssh", userTok, opts); !isAccess(err, 503, "host_unavailable") {
		t.Fatalf("without a host: %v", err)
	}
	a := runAgent(t, &Config{URL: r.URL, TokenFile: writeFile(t, "tok", r.token("lab/ssh", ShellPrefix, time.Hour, "host")),
		Streams: []StreamConfig{{Name: "ssh", Kind: KindShell, Topic: "lab/ssh", Addr: echoService(t).Addr().String()}}}, Options{})
	wait.For(t, "control connection", func() bool { return status(t, a, "ssh").Connected })
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Go(func() {
			c, err := client.Dial(ctx, r.URL, "lab/ssh", userTok, opts)
			if err != nil {
				t.Errorf("session %d: %v", i, err)
				return
			}
			defer c.CloseNow()
			data := make([]byte, size)
			rand.Read(data)
			go func() {
				for p := data; len(p) > 0; {
					n := min(len(p), 32<<10)
					if c.Write(ctx, client.Binary, p[:n]) != nil {
						return
					}
					p = p[n:]
				}
			}()
			h := sha256.New()
			var buf []byte
			for got := 0; got < size; {
				_, b, err := c.ReadInto(ctx, buf)
				if err != nil {
					t.Errorf("session %d: read after %d bytes: %v", i, got, err)
					return
				}
				buf = b
				h.Write(b)
				got += len(b)
			}
			if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
				t.Errorf("session %d: bytes differ", i)
			}
			c.Close()
		})
	}
	wg.Wait()
	wait.For(t, "sessions closed", func() bool { return *status(t, a, "ssh").Local.Active == 0 })
	if st := status(t, a, "ssh"); *st.Local.Sessions != sessions || st.BytesToRelay != sessions*size {
		t.Fatalf("status %+v %+v", st, *st.Local)
	}
}

func isAccess(err error, status int, code string) bool {
	var ae *client.AccessError
	return errors.As(err, &ae) && ae.Status == status && string(ae.Code) == code
}
