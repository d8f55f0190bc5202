package wsconn

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// wrappingListener wraps accepted connections as a server does that
// rewrites some of net/http's answers or counts connections.
type wrappingListener struct {
	net.Listener
	closes *atomic.Int32
}

func (l wrappingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wrappedConn{Conn: c, closes: l.closes}, nil
}

type wrappedConn struct {
	net.Conn
	closes *atomic.Int32
}

func (c *wrappedConn) Unwrap() net.Conn { return c.Conn }
func (c *wrappedConn) Close() error     { c.closes.Add(1); return c.Conn.Close() }

// TestHijackUnwrapsServerWrapper: behind a server's connection wrapper, the
// relay still writes to the TCP socket itself (writev), and closing the
// websocket closes through the wrapper (which counts open connections).
func TestHijackUnwrapsServerWrapper(t *testing.T) {
	var closes atomic.Int32
	got := make(chan *Conn, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(w, r, Options{})
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		got <- c
	}))
	srv.Listener = wrappingListener{Listener: srv.Listener, closes: &closes}
	srv.Start()
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, _, err := websocket.Dial(ctx, strings.Replace(srv.URL, "http", "ws", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseNow()
	c := <-got
	if !c.nc.vectored {
		t.Fatalf("the relay writes to %T: not the TCP socket, so no writev", c.nc.Conn)
	}
	if err := c.WriteMessages([]relay.Message{{Type: relay.Text, Data: []byte("hi")}}, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := cl.Read(ctx); err != nil || string(b) != "hi" {
		t.Fatalf("read %q %v", b, err)
	}
	c.Abort()
	if closes.Load() == 0 {
		t.Fatal("the websocket was closed beneath the server's wrapper, which never learnt of it")
	}
}
