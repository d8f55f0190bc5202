package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// olderServer is a relay without the one-step connect: the access request
// gives a code, the websocket with the code is accepted, and a websocket
// without one is answered as noCode says. It records the requests it got.
type olderServer struct {
	noCode func(w http.ResponseWriter, r *http.Request)

	mu       sync.Mutex
	requests []string // guarded by mu: "POST", "GET code", "GET"
}

func (o *olderServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := r.Method
	if r.Method == http.MethodGet && r.URL.Query().Get("code") != "" {
		kind = "GET code"
	}
	o.mu.Lock()
	o.requests = append(o.requests, kind)
	o.mu.Unlock()
	switch kind {
	case "POST":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"uri":"ws://`+r.Host+r.URL.Path+`?code=AAAAAAAAAAAAAAAAAAAAAA.n1"}`)
	case "GET code":
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ws.Close(websocket.StatusNormalClosure, "")
	default:
		o.noCode(w, r)
	}
}

func (o *olderServer) got() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.requests, ", ")
}

// TestDialFallsBackToTwoSteps: Dial tries the one-step connect, and uses
// the two-step flow when the server does not take the token in the
// handshake — whatever way it says so — or when told to (TwoStep).
func TestDialFallsBackToTwoSteps(t *testing.T) {
	jsonError := func(status int, code wire.ErrorCode) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, `{"error":{"code":"`+string(code)+`","message":"m"}}`)
		}
	}
	for _, tc := range []struct {
		name   string
		noCode func(http.ResponseWriter, *http.Request)
		opts   *Options
		want   string
	}{
		{"older Switchboard", jsonError(http.StatusUnauthorized, wire.ErrorCodeMissing), nil, "GET, POST, GET code"},
		{"shell homed elsewhere", jsonError(http.StatusMisdirectedRequest, wire.ErrorTwoStepRequired), nil, "GET, POST, GET code"},
		{"practable-like plain error", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "missing code", http.StatusBadRequest) }, nil, "GET, POST, GET code"},
		{"upgrades without switchboard.v1", func(w http.ResponseWriter, r *http.Request) {
			if ws, err := websocket.Accept(w, r, nil); err == nil {
				ws.CloseNow()
			}
		}, nil, "GET, POST, GET code"},
		{"TwoStep", jsonError(http.StatusUnauthorized, wire.ErrorCodeMissing), &Options{TwoStep: true}, "POST, GET code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &olderServer{noCode: tc.noCode}
			ts := httptest.NewServer(o)
			defer ts.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, ts.URL, "t", "a.b.c", tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			c.CloseNow()
			if got := o.got(); got != tc.want {
				t.Errorf("requests %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDialOneStepRefusalIsFinal: a Switchboard refusal of the one-step
// connect (a revoked booking) is Dial's answer; no second attempt.
func TestDialOneStepRefusalIsFinal(t *testing.T) {
	o := &olderServer{noCode: func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Sec-WebSocket-Protocol"), wire.BearerSubprotocolPrefix+"a.b.c") {
			http.Error(w, "no bearer", http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":{"code":"booking_denied","message":"m"}}`)
	}}
	ts := httptest.NewServer(o)
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Dial(ctx, ts.URL, "t", "a.b.c", nil)
	var ae *AccessError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != wire.ErrorBookingDenied {
		t.Fatalf("Dial: %v", err)
	}
	if got := o.got(); got != "GET" {
		t.Errorf("requests %q, want one GET", got)
	}
	// A token a subprotocol cannot carry goes the two-step way at once.
	if _, err := DialOneStep(ctx, ts.URL, "t", "has space", nil); !errors.Is(err, ErrOneStepUnavailable) {
		t.Errorf("DialOneStep with a token that is not an HTTP token: %v", err)
	}
}
