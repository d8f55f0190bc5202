package wsconn

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/coder/websocket"
)

// pipeListener is a net.Listener whose connections are net.Pipe ends
// handed over by dial: a websocket pair with no socket, so that tests can
// run it in a testing/synctest bubble (blocking on a loopback socket does
// not count as blocked there, and deadlines must be on the bubble's clock).
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// pipePair is pair over net.Pipe: the server's Conn and the client's
// websocket, for tests inside a synctest bubble.
func pipePair(t *testing.T, maxMessage int) (*Conn, *websocket.Conn) {
	t.Helper()
	got := make(chan *Conn, 1)
	ln := newPipeListener()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(w, r, Options{MaxMessageBytes: maxMessage})
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		got <- c
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	transport := &http.Transport{DialContext: ln.dial}
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	cl, _, err := websocket.Dial(t.Context(), "ws://pipe/", &websocket.DialOptions{HTTPClient: &http.Client{Transport: transport}})
	if err != nil {
		t.Fatal(err)
	}
	cl.SetReadLimit(-1)
	t.Cleanup(func() { cl.CloseNow() })
	c := <-got
	t.Cleanup(c.Abort)
	return c, cl
}
