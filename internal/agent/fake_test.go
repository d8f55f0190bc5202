package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
)

// fakeRelay speaks the relay's access and websocket protocol just enough to
// script a relay's behaviour: it answers every access request with a code,
// or with refuse's answer, and hands each websocket to onConn.
type fakeRelay struct {
	t   *testing.T
	srv *httptest.Server
	url string

	accesses atomic.Int64 // access requests
	accepts  atomic.Int64 // websockets accepted

	mu     sync.Mutex
	tokens []string // the Authorization of each access request

	// refuse, if set, answers an access request with status and code
	// (status 0: grant it).
	refuse func(n int64) (status int, code string)
	// onConn serves a websocket opened on prefix/topic (control and stream
	// connections) and returns when done; the socket is then closed.
	onConn func(ws *websocket.Conn, path string)
	// onSession serves a shell session's websocket: one whose code starts
	// with "sess-"; the session is the path's last segment.
	onSession func(ws *websocket.Conn, session string)
	// onPut, if set, answers PUT requests (the hub's upload of a run's
	// output files); without it they get 404.
	onPut http.HandlerFunc
}

func newFakeRelay(t *testing.T) *fakeRelay {
	f := &fakeRelay{t: t}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.url = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRelay) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut {
		if f.onPut == nil {
			http.NotFound(w, r)
			return
		}
		f.onPut(w, r)
		return
	}
	if r.Method == http.MethodPost {
		n := f.accesses.Add(1)
		f.mu.Lock()
		f.tokens = append(f.tokens, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		f.mu.Unlock()
		if f.refuse != nil {
			if status, code := f.refuse(n); status != 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				fmt.Fprintf(w, `{"error":{"code":%q,"message":"refused by the fake"}}`, code)
				return
			}
		}
		json.NewEncoder(w).Encode(map[string]string{"uri": "ws://" + r.Host + r.URL.Path + "?code=secretcode" + fmt.Sprint(n)})
		return
	}
	if r.URL.Query().Get("code") == "" {
		// A relay without the one-step connect (as an older Switchboard
		// answers): pkg/client falls back to the access request.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"code_missing","message":"query parameter code is required"}}`)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer ws.CloseNow()
	f.accepts.Add(1)
	if strings.HasPrefix(r.URL.Query().Get("code"), "sess-") && f.onSession != nil {
		f.onSession(ws, r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:])
		return
	}
	if f.onConn != nil {
		f.onConn(ws, r.URL.Path)
	}
}

func (f *fakeRelay) tokensSeen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

// holdOpen serves a websocket until the peer or the test ends it.
func holdOpen(ws *websocket.Conn, _ string) {
	for {
		if _, _, err := ws.Read(context.Background()); err != nil {
			return
		}
	}
}
