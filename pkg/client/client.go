// Package client is the Go client of a Switchboard (or practable/relay)
// relay: it connects with a token, and reads and writes messages. Dial
// presents the token in the websocket handshake itself (the one-step
// connect, wire.BearerSubprotocolPrefix) and falls back to the two-step flow
// — trade the token for a one-time code at the access endpoint, then open
// the websocket with the code — when the server does not take it (an older
// Switchboard, practable/relay) or asks for it (a shell topic homed on
// another node of a cluster). Options.TwoStep skips the first attempt.
//
//	conn, err := client.Dial(ctx, "http://127.0.0.1:8080", "demo", token, nil)
//	if err != nil { … }          // *AccessError on refusal, with status and code
//	defer conn.Close()
//	err = conn.Write(ctx, client.Text, []byte("hello"))
//	typ, data, err := conn.Read(ctx) // *CloseError when the relay closes, with its code
//
// Error codes, close codes (with their reconnect advice) and connection
// types are those of pkg/wire, the wire contract.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// MessageType is the type of a message.
type MessageType int

// Message types (the websocket opcodes).
const (
	Text   MessageType = MessageType(websocket.MessageText)
	Binary MessageType = MessageType(websocket.MessageBinary)
)

// DefaultPrefix is the connection type of shared topics.
const DefaultPrefix = wire.PrefixSession

// DefaultReadLimit is the largest message Read accepts by default.
const DefaultReadLimit = 16 << 20

// Options configure Access and Dial. A nil *Options means all defaults.
type Options struct {
	// Prefix is the connection type; "" means DefaultPrefix.
	Prefix string
	// HTTPClient makes the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Header is added to the access request and the websocket handshake
	// (e.g. Origin, User-Agent).
	Header http.Header
	// ReadLimit is the largest message accepted; 0 means DefaultReadLimit,
	// negative means no limit.
	ReadLimit int64
	// TwoStep makes Dial use the two-step flow only (access request, then
	// websocket with the code), never the one-step connect: for a server
	// known not to offer it (practable/relay), to save the failed attempt.
	TwoStep bool
	// Retries is how many times Access, DialOneStep and Dial try again
	// after the relay refused with 429 or 503 (retry.go; not
	// too_many_connections or host_unavailable, which waiting seconds
	// does not cure); 0 means DefaultRetries, negative means never. Dial
	// retries its two-step flow whole (a new code each time).
	Retries int
	// RetryMaxDelay caps each wait before a retry: the refusal's
	// Retry-After, or without one a backoff from 250 ms doubling, plus up
	// to a quarter more at random; 0 means DefaultRetryMaxDelay. No wait
	// runs past the context's deadline.
	RetryMaxDelay time.Duration
}

func (o *Options) prefix() string {
	if o == nil || o.Prefix == "" {
		return DefaultPrefix
	}
	return o.Prefix
}

func (o *Options) httpClient() *http.Client {
	if o == nil || o.HTTPClient == nil {
		return http.DefaultClient
	}
	return o.HTTPClient
}

// AccessError is a refusal by the relay's HTTP endpoints.
type AccessError struct {
	Status  int            // HTTP status
	Code    wire.ErrorCode // machine-readable error code, e.g. wire.ErrorTokenExpired; "" if the body had none
	Message string
	// RetryAfter is the answer's Retry-After (429 and 503 refusals
	// usually have one), 0 without.
	RetryAfter time.Duration
}

func (e *AccessError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("client: access refused: HTTP %d %s", e.Status, e.Message)
	}
	return fmt.Sprintf("client: access refused: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// CloseError reports that the relay closed the connection. e.Code.Reconnect()
// says whether and how to reconnect.
type CloseError struct {
	Code   wire.CloseCode // websocket close code, e.g. wire.CloseTokenExpired
	Reason string
}

func (e *CloseError) Error() string {
	name := e.Code.String()
	if e.Reason != "" {
		return fmt.Sprintf("client: connection closed with %d (%s): %s", e.Code, name, e.Reason)
	}
	return fmt.Sprintf("client: connection closed with %d (%s)", e.Code, name)
}

// CloseCodeName names the close codes the relay uses (docs/protocol.md):
// wire.CloseCode(code).String(), or "unknown".
func CloseCodeName(code int) string {
	if code < 0 || code > 0xffff {
		return "unknown"
	}
	return wire.CloseCode(code).String()
}

// Access posts token to baseURL/prefix/topic and returns the websocket URI
// holding a one-time code. A 429 or 503 refusal is retried (Options.Retries).
func Access(ctx context.Context, baseURL, topic, token string, opts *Options) (string, error) {
	return withRetries(ctx, opts, func() (string, error) { return accessOnce(ctx, baseURL, topic, token, opts) })
}

// accessOnce is Access without retries.
func accessOnce(ctx context.Context, baseURL, topic, token string, opts *Options) (string, error) {
	u, err := endpoint(baseURL, opts.prefix(), topic)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", fmt.Errorf("client: %w", err)
	}
	if opts != nil {
		for k, vs := range opts.Header {
			req.Header[k] = vs
		}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := opts.httpClient().Do(req)
	if err != nil {
		return "", fmt.Errorf("client: access: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("client: access: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", accessError(resp, body)
	}
	var ok struct {
		URI string `json:"uri"`
	}
	if err := json.Unmarshal(body, &ok); err != nil || ok.URI == "" {
		return "", fmt.Errorf("client: access: response has no uri")
	}
	return ok.URI, nil
}

func endpoint(baseURL, prefix, topic string) (string, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("client: base URL %q: want http(s)://host[:port]", baseURL)
	}
	switch u.Scheme {
	case "http", "https":
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("client: base URL %q: want http(s)://host[:port]", baseURL)
	}
	return strings.TrimSuffix(u.String(), "/") + "/" + prefix + "/" + topic, nil
}

// accessError is the refusal resp (whose body is body) stands for.
func accessError(resp *http.Response, body []byte) error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	ae := &AccessError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		ae.Code, ae.Message = wire.ErrorCode(e.Error.Code), e.Error.Message
	} else {
		ae.Message = strings.TrimSpace(string(body))
	}
	return ae
}

// Conn is a relay connection. Read and Write may be called concurrently with
// each other, but not each with itself.
type Conn struct {
	ws *websocket.Conn
}

// Dial connects to topic at baseURL with token: in one step when the server
// takes the token in the handshake (DialOneStep), else — or with
// Options.TwoStep — by trading it for a code (Access) and opening the
// websocket with the code (DialURI).
func Dial(ctx context.Context, baseURL, topic, token string, opts *Options) (*Conn, error) {
	if opts == nil || !opts.TwoStep {
		c, err := DialOneStep(ctx, baseURL, topic, token, opts)
		if !errors.Is(err, ErrOneStepUnavailable) {
			return c, err
		}
	}
	// Both steps are retried together: a code is used up by its
	// websocket, refused or not, so a retry needs a new one.
	return withRetries(ctx, opts, func() (*Conn, error) {
		uri, err := accessOnce(ctx, baseURL, topic, token, opts)
		if err != nil {
			return nil, err
		}
		return DialURI(ctx, uri, opts)
	})
}

// ErrOneStepUnavailable is DialOneStep's error when the connection must be
// made with the two-step flow: the server did not take the token in the
// handshake (an older Switchboard answers 401 code_missing; practable/relay
// an error without a Switchboard error code, or a websocket without
// wire.Subprotocol), it asked for the two-step flow (421
// two_step_required), or the token cannot be carried in a subprotocol.
var ErrOneStepUnavailable = errors.New("client: the one-step connect is not available")

// DialOneStep opens the websocket at baseURL/prefix/topic with token in the
// handshake (subprotocols wire.Subprotocol and wire.BearerSubprotocol): one
// round trip, no code. The server checks the token as the access endpoint
// does; a refusal is an *AccessError as Access gives, after the retries of
// a 429 or 503 (Options.Retries).
func DialOneStep(ctx context.Context, baseURL, topic, token string, opts *Options) (*Conn, error) {
	bearer, ok := wire.BearerSubprotocol(token)
	if !ok {
		return nil, ErrOneStepUnavailable
	}
	u, err := endpoint(baseURL, opts.prefix(), topic)
	if err != nil {
		return nil, err
	}
	c, err := withRetries(ctx, opts, func() (*Conn, error) { return dial(ctx, u, opts, []string{wire.Subprotocol, bearer}) })
	var ae *AccessError
	switch {
	case errors.As(err, &ae) && (ae.Code == "" || ae.Code == wire.ErrorCodeMissing || ae.Code == wire.ErrorTwoStepRequired):
		return nil, ErrOneStepUnavailable
	case err != nil:
		return nil, err
	case !strings.EqualFold(c.ws.Subprotocol(), wire.Subprotocol):
		// Upgraded without taking the token: not a server of ours.
		_ = c.CloseNow()
		return nil, ErrOneStepUnavailable
	}
	return c, nil
}

// DialURI opens the websocket at a URI returned by Access.
func DialURI(ctx context.Context, uri string, opts *Options) (*Conn, error) {
	return dial(ctx, uri, opts, nil)
}

// dial opens the websocket at uri offering subprotocols.
func dial(ctx context.Context, uri string, opts *Options, subprotocols []string) (*Conn, error) {
	dopts := &websocket.DialOptions{HTTPClient: opts.httpClient(), CompressionMode: websocket.CompressionDisabled, Subprotocols: subprotocols}
	if opts != nil {
		dopts.HTTPHeader = opts.Header
	}
	ws, resp, err := websocket.Dial(ctx, uri, dopts)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
			}
			return nil, accessError(resp, body)
		}
		return nil, fmt.Errorf("client: dial: %w", redactURL(err))
	}
	limit := int64(DefaultReadLimit)
	if opts != nil && opts.ReadLimit != 0 {
		limit = opts.ReadLimit
	}
	ws.SetReadLimit(limit)
	return &Conn{ws: ws}, nil
}

// redactURL removes the query (the one-time code) from URLs in err.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.RawQuery != "" {
			u.RawQuery = "code=REDACTED"
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

// Read returns the next message. When the relay closes the connection it
// returns a *CloseError.
func (c *Conn) Read(ctx context.Context) (MessageType, []byte, error) {
	typ, data, err := c.ws.Read(ctx)
	if err != nil {
		return 0, nil, mapError(err)
	}
	return MessageType(typ), data, nil
}

// ReadInto reads the next message into buf (reusing its storage, growing it
// as needed) and returns the filled slice. It avoids an allocation per
// message for callers that process a message before reading the next.
func (c *Conn) ReadInto(ctx context.Context, buf []byte) (MessageType, []byte, error) {
	typ, r, err := c.ws.Reader(ctx)
	if err != nil {
		return 0, buf[:0], mapError(err)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return MessageType(typ), buf, nil
		}
		if err != nil {
			return 0, buf[:0], mapError(err)
		}
	}
}

// Write sends one message.
func (c *Conn) Write(ctx context.Context, typ MessageType, data []byte) error {
	if err := c.ws.Write(ctx, websocket.MessageType(typ), data); err != nil {
		return mapError(err)
	}
	return nil
}

// Close closes the connection normally (1000).
func (c *Conn) Close() error {
	err := c.ws.Close(websocket.StatusNormalClosure, "")
	if err != nil && !errors.Is(err, net.ErrClosed) {
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return nil
		}
		return fmt.Errorf("client: close: %w", err)
	}
	return nil
}

// CloseNow closes the connection without a close handshake.
func (c *Conn) CloseNow() error { return c.ws.CloseNow() }

func mapError(err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return &CloseError{Code: wire.CloseCode(ce.Code), Reason: ce.Reason}
	}
	return fmt.Errorf("client: %w", err)
}
