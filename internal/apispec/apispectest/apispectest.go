// Package apispectest checks HTTP traffic against the OpenAPI description
// (internal/apispec) with kin-openapi, so that the description cannot drift
// from what the server does: Validator.Middleware wraps a node's handler in
// tests (server.Deps.Middleware) and fails the test on any request or answer
// the description does not allow.
//
// The rules, for each request a test makes:
//   - A request that matches no described operation must have been refused
//     with a JSON error (404, 405, or a refusal before routing: 400, 429,
//     503…); anything else is an undescribed route.
//   - A request the description refuses (parameters, body) must have been
//     refused by the server (4xx); a server that accepts it means the
//     description is stricter than the server.
//   - Every answer must match the operation's responses: a success status
//     must be listed, and its body (JSON by schema; other media types by
//     their listed type) must fit; errors fit the shared Error schema.
//   - A websocket upgrade (hijacked) is checked as a request only.
//
// kin-openapi validates OpenAPI 3.1 documents with a JSON Schema 2020-12
// validator (openapi3filter turns it on for 3.1), so the description is
// 3.1 as served. Paths with a wildcard that spans segments (a topic such as
// expt42/video0) are routed here by net/http's ServeMux patterns, written
// in the description as the x-pattern extension of the path item, since
// OpenAPI path parameters never contain "/".
package apispectest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/switchboard-hub/switchboard/internal/apispec"
)

// maxCapture bounds the bytes of a request or answer body kept for
// checking; a longer body is checked without its content.
const maxCapture = 1 << 20

// Description is the loaded description and its router.
type Description struct {
	Doc *openapi3.T
	// mux routes a request to its operation: each operation's pattern
	// ("GET /api/v1/jobs/{id}") is registered with a handler that is
	// never called; ServeMux.Handler gives the pattern back.
	mux *http.ServeMux
	ops map[string]operation // by ServeMux pattern
	// undescribed are the patterns of the routes the description leaves
	// out on purpose (x-undescribed: the dashboard's pages and sign-in).
	undescribed map[string]bool
}

type operation struct {
	path   string // the description's path ("/{prefix}/{topic}")
	method string
	item   *openapi3.PathItem
	op     *openapi3.Operation
}

var (
	loadOnce sync.Once
	loaded   *Description
	loadErr  error
)

// rawDecoders are media types checked as strings (their schema says what
// they are: UWS XML, an event stream).
var rawDecoders = []string{"application/xml", "text/xml", "text/event-stream", "text/html"}

// Load parses and validates the embedded description once.
func Load() (*Description, error) {
	loadOnce.Do(func() {
		for _, ct := range rawDecoders {
			openapi3filter.RegisterBodyDecoder(ct, func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
				b, err := io.ReadAll(r)
				return string(b), err
			})
		}
		loaded, loadErr = load()
	})
	return loaded, loadErr
}

func load() (*Description, error) {
	b, err := apispec.JSON()
	if err != nil {
		return nil, err
	}
	doc, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("apispectest: load: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("apispectest: the description is not valid OpenAPI: %w", err)
	}
	d := &Description{Doc: doc, mux: http.NewServeMux(), ops: map[string]operation{}, undescribed: map[string]bool{}}
	if list, ok := doc.Extensions["x-undescribed"].([]any); ok {
		for _, e := range list {
			p, _ := e.(string)
			d.undescribed[p] = true
			d.mux.Handle(p, http.NotFoundHandler())
		}
	}
	for path, item := range doc.Paths.Map() {
		pattern := path
		if x, ok := item.Extensions["x-pattern"].(string); ok {
			pattern = x
		}
		for method, op := range item.Operations() {
			p := method + " " + pattern
			d.ops[p] = operation{path: path, method: method, item: item, op: op}
			d.mux.Handle(p, http.NotFoundHandler())
		}
	}
	return d, nil
}

// Patterns returns every operation's ServeMux pattern, sorted.
func (d *Description) Patterns() []string {
	out := make([]string, 0, len(d.ops))
	for p := range d.ops {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// find returns the operation r asks for and its path parameters. A HEAD
// request is its GET's.
func (d *Description) find(r *http.Request) (*routers.Route, map[string]string, bool) {
	probe := r.Clone(context.Background())
	if probe.Method == http.MethodHead {
		probe.Method = http.MethodGet
	}
	h, pattern := d.mux.Handler(probe)
	if reflect.TypeOf(h) == redirectHandlerType {
		return nil, nil, false // ServeMux would redirect to another path
	}
	op, ok := d.ops[pattern]
	if !ok {
		return nil, nil, false
	}
	// The mux matched: read the wildcards back from the pattern.
	params := map[string]string{}
	if names := wildcardNames(pattern); len(names) > 0 {
		var got *http.Request
		m2 := http.NewServeMux()
		m2.HandleFunc(pattern, func(_ http.ResponseWriter, rr *http.Request) { got = rr })
		m2.ServeHTTP(discard{}, probe)
		for _, n := range names {
			if got != nil {
				params[n] = got.PathValue(n)
			}
		}
	}
	return &routers.Route{Spec: d.Doc, Path: op.path, PathItem: op.item, Method: op.method, Operation: op.op}, params, true
}

// redirectHandlerType is the type of ServeMux's redirects (a slash added
// or a path cleaned).
var redirectHandlerType = reflect.TypeOf(http.RedirectHandler("/", http.StatusMovedPermanently))

// Undescribed reports whether r is for a route the description leaves out
// on purpose (x-undescribed).
func (d *Description) Undescribed(r *http.Request) bool {
	probe := r.Clone(context.Background())
	if probe.Method == http.MethodHead {
		probe.Method = http.MethodGet
	}
	_, pattern := d.mux.Handler(probe)
	return d.undescribed[pattern]
}

var wildcard = regexp.MustCompile(`\{([A-Za-z0-9_]+)(\.\.\.)?\}`)

func wildcardNames(pattern string) []string {
	var out []string
	for _, m := range wildcard.FindAllStringSubmatch(pattern, -1) {
		out = append(out, m[1])
	}
	return out
}

// discard is a ResponseWriter that keeps nothing.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// Validator checks the traffic of one test.
type Validator struct {
	d *Description
	t testing.TB

	mu   sync.Mutex
	done bool // the test has ended (its cleanups ran): no more reports
}

// New returns a validator reporting to t. Register it before the server
// it wraps (t.Cleanup runs last first), so that it outlives the server.
func New(t testing.TB) *Validator {
	t.Helper()
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	v := &Validator{d: d, t: t}
	t.Cleanup(func() {
		v.mu.Lock()
		v.done = true
		v.mu.Unlock()
	})
	return v
}

// Middleware is a server.Deps.Middleware that checks every request and
// answer.
func (v *Validator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var reqBody *capture
		rec := &recorder{ResponseWriter: w, status: 0, restore: func() {}}
		if r.Body != nil && r.Body != http.NoBody {
			// net/http decides, when it writes the answer's header, whether
			// to discard what the handler left of the body by the type of
			// r.Body (its own: a large rest closes the connection instead):
			// the original goes back before any header is written.
			orig := r.Body
			reqBody = &capture{ReadCloser: orig}
			r.Body = reqBody
			rec.restore = func() { r.Body = orig }
		}
		next.ServeHTTP(rec, r)
		rec.restore()
		v.check(r, reqBody, rec)
	})
}

func (v *Validator) errorf(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.done {
		v.t.Errorf("apispectest: "+format, args...)
	}
}

// check validates one exchange after the handler returned.
func (v *Validator) check(r *http.Request, body *capture, rec *recorder) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	what := r.Method + " " + r.URL.Path
	if v.d.Undescribed(r) {
		return
	}
	route, params, ok := v.d.find(r)
	if !ok {
		switch {
		case status >= 300 && status < 400 && rec.Header().Get("Location") != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			// ServeMux's redirect to the path with a slash, or cleaned.
		case r.Method == http.MethodOptions && status == http.StatusNoContent && rec.Header().Get("Allow") != "":
			// OPTIONS on an API path: which methods it has.
		case rec.hijacked || status < 400:
			v.errorf("%s: answered %d, but the description has no such operation", what, status)
		default:
			v.checkError(what, status, rec)
		}
		return
	}
	// The request as the handler got it, with the body it read. A body
	// it did not read to the end is not checked: reading the rest here
	// would hold back the answer (net/http sends it when the handler
	// returns) from a client still sending.
	req := r.Clone(context.Background())
	req.Body = http.NoBody
	if rb := route.Operation.RequestBody; rb != nil && rb.Value != nil && req.Header.Get("Content-Type") == "" {
		// The server reads a JSON body as JSON whatever its Content-Type
		// (curl -d and scripts often send none): check it as JSON.
		if _, jsonOnly := rb.Value.Content["application/json"]; jsonOnly && len(rb.Value.Content) == 1 {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	bodyKnown := body == nil
	if body != nil && !rec.hijacked {
		if body.eof && !body.over {
			req.Body = io.NopCloser(bytes.NewReader(body.buf.Bytes()))
			bodyKnown = true
		}
	}
	if rb := route.Operation.RequestBody; rb != nil && rb.Value != nil {
		if _, any := rb.Value.Content["*/*"]; any && len(rb.Value.Content) == 1 {
			bodyKnown = false // any bytes at all (an uploaded file): nothing to check
		}
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true,
		ExcludeRequestBody: !bodyKnown}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && (status < 400 || rec.hijacked) {
		v.errorf("%s: the server answered %d to a request the description refuses: %v", what, status, err)
	}
	if rec.hijacked {
		return // a websocket: the description lists 101; nothing more to read
	}
	if rec.status == 0 && rec.buf.Len() == 0 && r.Context().Err() != nil {
		return // the client left (a WAIT given up) before any answer
	}
	if status < 400 && route.Operation.Responses.Status(status) == nil {
		v.errorf("%s: status %d is not among the operation's responses", what, status)
		return
	}
	ropts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true,
		ExcludeResponseBody: rec.over || r.Method == http.MethodHead}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: rec.Header(),
		Body: io.NopCloser(bytes.NewReader(rec.buf.Bytes())), Options: ropts}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		v.errorf("%s: answer %d does not match the description: %v\nbody: %.500s", what, status, err, rec.buf.String())
	}
}

// checkError checks an answer to a request no operation describes: a JSON
// error (the Error schema).
func (v *Validator) checkError(what string, status int, rec *recorder) {
	ct, _, _ := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if ct != "application/json" {
		v.errorf("%s: %d with Content-Type %q to a request no operation describes; want a JSON error", what, status, ct)
		return
	}
	schema := v.d.Doc.Components.Schemas["Error"]
	var doc any
	if err := decodeJSON(rec.buf.Bytes(), &doc); err != nil {
		v.errorf("%s: %d: %v", what, status, err)
		return
	}
	if err := schema.Value.VisitJSON(doc, openapi3.EnableJSONSchema2020()); err != nil {
		v.errorf("%s: %d: not the Error schema: %v", what, status, err)
	}
}

// capture keeps the bytes a handler reads from a request body.
type capture struct {
	io.ReadCloser
	buf  bytes.Buffer
	eof  bool
	over bool // more than maxCapture: not kept
}

func (c *capture) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.keep(p[:n])
	if errors.Is(err, io.EOF) {
		c.eof = true
	}
	return n, err
}

func (c *capture) keep(b []byte) {
	if c.over {
		return
	}
	if c.buf.Len()+len(b) > maxCapture {
		c.over = true
		c.buf.Reset()
		return
	}
	c.buf.Write(b)
}

// recorder passes an answer through and keeps its status and (up to
// maxCapture) body. It unwraps for http.ResponseController and hijacks and
// flushes for the handlers that ask the writer directly.
type recorder struct {
	http.ResponseWriter
	restore  func() // puts the request's own body back
	status   int
	buf      bytes.Buffer
	over     bool
	hijacked bool
}

func (r *recorder) WriteHeader(code int) {
	r.restore()
	if r.status == 0 || (r.status >= 100 && r.status < 200 && code >= 200) {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.restore()
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if !r.over {
		if r.buf.Len()+len(b) > maxCapture {
			r.over = true
			r.buf.Reset()
		} else {
			r.buf.Write(b)
		}
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Flush() {
	r.restore()
	if r.status == 0 {
		r.status = http.StatusOK
	}
	http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	r.hijacked = true
	r.restore()
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

// decodeJSON decodes one JSON value.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	return nil
}
