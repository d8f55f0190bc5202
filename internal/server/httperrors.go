package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// net/http answers some malformed requests itself, before any handler runs
// (431 for headers over MaxHeaderBytes, 400 for a bad request line or Host,
// 501 for an unknown transfer coding, 505 for an unknown version), in plain
// text written straight to the connection in one Write of this shape:
//
//	HTTP/1.1 <status line><cannedErrorHeaders><text>
//
// jsonErrorConn rewrites exactly that shape as our JSON error, so that every
// answer of the server is JSON. A handler's own response never has it: net/http
// always adds a Date header after the ones a handler sets.
const cannedErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// rewriteCannedError returns the JSON version of a response net/http wrote
// itself, or false if b is not one.
func rewriteCannedError(b []byte) ([]byte, bool) {
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 ")) {
		return nil, false
	}
	i := bytes.Index(b, []byte(cannedErrorHeaders))
	if i < 0 || bytes.IndexByte(b[:i], '\n') >= 0 {
		return nil, false
	}
	status := string(b[len("HTTP/1.1 "):i])
	code, err := strconv.Atoi(status[:min(3, len(status))])
	if err != nil || code < 400 || code > 599 {
		return nil, false
	}
	detail := strings.TrimSpace(string(b[i+len(cannedErrorHeaders):]))
	var errCode wire.ErrorCode
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		errCode, detail = wire.ErrorHeadersTooLarge, "request headers are larger than the server accepts"
	case http.StatusNotImplemented:
		errCode = wire.ErrorUnsupportedTransferEncoding
	case http.StatusHTTPVersionNotSupported:
		errCode = wire.ErrorUnsupportedHTTPVersion
	default:
		errCode = wire.ErrorBadRequest
	}
	var body bytes.Buffer
	_ = json.NewEncoder(&body).Encode(struct {
		Error *apierr.Error `json:"error"`
	}{apierr.New(code, errCode, detail)})
	var out bytes.Buffer
	out.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	out.WriteString("Content-Type: application/json\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n")
	out.WriteString("Connection: close\r\nContent-Length: " + strconv.Itoa(body.Len()) + "\r\n\r\n")
	out.Write(body.Bytes())
	return out.Bytes(), true
}

// serverListener wraps each accepted connection in a jsonErrorConn that
// counts itself in open while it is open, and reports accept errors.
type serverListener struct {
	net.Listener
	handshakeTimeout time.Duration // for TLS connections
	open             *atomic.Int64
	acceptErrors     *acceptErrorLog
}

func (l serverListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		l.acceptErrors.report(err)
		return nil, err
	}
	l.open.Add(1)
	if tc, ok := c.(*tls.Conn); ok {
		return &jsonErrorTLSConn{jsonErrorConn{Conn: tc, open: l.open}, tc, l.handshakeTimeout}, nil
	}
	return &jsonErrorConn{Conn: c, open: l.open}, nil
}

// jsonErrorConn is a connection whose canned net/http errors are rewritten
// as JSON (see cannedErrorHeaders), counted in open until it is closed.
type jsonErrorConn struct {
	net.Conn
	open   *atomic.Int64
	closed atomic.Bool
}

// Close closes the connection and takes it off the count, once. A
// hijacked websocket, which writes to the connection beneath, closes
// through here (internal/wsconn).
func (c *jsonErrorConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}

func (c *jsonErrorConn) Write(b []byte) (int, error) {
	if out, ok := rewriteCannedError(b); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// Unwrap returns the connection beneath: a hijacked websocket reads and
// writes it directly (internal/wsconn unwraps), keeping writev on TCP
// sockets, and closes through Close.
func (c *jsonErrorConn) Unwrap() net.Conn { return c.Conn }

// jsonErrorTLSConn is a jsonErrorConn over TLS. net/http sets Request.TLS
// from ConnectionState, which it asks for before reading the first request:
// the handshake is completed here, within the handshake timeout.
type jsonErrorTLSConn struct {
	jsonErrorConn
	tls              *tls.Conn
	handshakeTimeout time.Duration
}

func (c *jsonErrorTLSConn) ConnectionState() tls.ConnectionState {
	ctx, cancel := context.WithTimeout(context.Background(), c.handshakeTimeout)
	defer cancel()
	// A failed handshake leaves the state empty; the first read then
	// fails with the same error and the server closes the connection.
	_ = c.tls.HandshakeContext(ctx)
	return c.tls.ConnectionState()
}

// routeErrors answers in JSON what http.ServeMux would otherwise answer on
// its own, with an empty body or a route meant for something else, and
// hands connection-type paths to the access handler (servePath, see
// access.Handler.ServePath) without the ServeMux's matching, which cost
// more CPU per connect than the access request's own checks:
//   - a connection-type path without a topic (POST /session): 400;
//   - OPTIONS on a path of the API, dashboard or jobs: 204 with Allow, or
//     404 (access paths and HTTP publish keep their CORS preflight);
//   - a method other than GET and HEAD on a path ServeMux would redirect
//     to add a slash: 404 instead of a 307 that few clients follow.
func routeErrors(mux *http.ServeMux, isAccessPrefix func(string) bool, servePath func(w http.ResponseWriter, r *http.Request, prefix, topic string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if isAccessPrefix(first) {
			if rest == "" {
				apierr.WriteNew(w, http.StatusBadRequest, wire.ErrorInvalidTopic, "a topic is required: /"+first+"/{topic}")
				return
			}
			// The mux would route the path to the access handler
			// (checkConnectionRoutes) with these two parts, as it unescapes
			// each segment: with no RawPath, the request's escaping is the
			// default one, so Path's segments are those. Other methods, and
			// paths with escapes of their own, take the mux's way (405…).
			if r.URL.RawPath == "" && servePath(w, r, first, rest) {
				return
			}
			mux.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodOptions && r.URL.Path != wire.PublishPath {
			allow := allowedMethods(mux, r, isAccessPrefix)
			if allow == "" {
				apierr.WriteNew(w, http.StatusNotFound, wire.ErrorNotFound, "no such endpoint")
				return
			}
			w.Header().Set("Allow", allow+", "+http.MethodOptions)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if h, _ := mux.Handler(r); reflect.TypeOf(h) == redirectHandlerType {
				apierr.WriteNew(w, http.StatusNotFound, wire.ErrorNotFound, "no such endpoint")
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// checkConnectionRoutes checks what routeErrors relies on to skip the
// ServeMux for connection-type paths: for each connection type this node
// serves (isKnown), mux routes each method of access.RouteMethods (and
// HEAD) to the access handler's pattern, not to a more specific route
// added under the type's prefix.
func checkConnectionRoutes(mux *http.ServeMux, isKnown func(string) bool) error {
	for _, prefix := range []string{wire.PrefixSession, wire.PrefixShell, wire.PrefixAgent} {
		if !isKnown(prefix) {
			continue
		}
		for _, m := range append([]string{http.MethodHead}, access.RouteMethods...) {
			for _, path := range []string{"/" + prefix + "/t", "/" + prefix + "/t/u"} {
				want := m + " " + access.RoutePath
				if m == http.MethodHead {
					want = http.MethodGet + " " + access.RoutePath
				}
				if _, got := mux.Handler(&http.Request{Method: m, Host: "probe", URL: &url.URL{Path: path}}); got != want {
					return fmt.Errorf("server: %s %s is routed to %q, not to the access endpoints' %q: routes under a connection type's prefix are the access handler's alone", m, path, got, want)
				}
			}
		}
	}
	return nil
}
