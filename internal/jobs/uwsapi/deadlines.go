package uwsapi

import (
	"io"
	"net/http"
	"time"
)

// The server bounds an ordinary request's reading and answering with
// read and write deadlines on its connection (server.Config
// RequestTimeout). The requests of this package that are long by nature
// move those deadlines with http.ResponseController before they pass:
//   - a blocked WAIT to the end of its wait plus TransferIdleTimeout;
//   - an upload or a download TransferIdleTimeout ahead each time bytes
//     move, so it fails only when it stalls.
//
// Deadlines use the wall clock (time.Now), never Config.Now, which tests
// move. A ResponseWriter without deadlines (a test recorder) has none to
// move: the errors of ResponseController are ignored.

// extendDeadlines sets the read and write deadlines of w's connection to
// at. The read deadline matters even when the body was read: net/http
// keeps a read pending to notice a client that goes away, and a read
// deadline that passes there cancels the request's context.
func extendDeadlines(w http.ResponseWriter, at time.Time) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(at)
	_ = rc.SetWriteDeadline(at)
}

// transfer moves w's deadlines idle ahead of each read or write it
// serves.
type transfer struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (h *API) newTransfer(w http.ResponseWriter) *transfer {
	return &transfer{w: w, rc: http.NewResponseController(w), idle: h.cfg.TransferIdleTimeout}
}

// progress moves both deadlines idle from now.
func (t *transfer) progress() {
	at := time.Now().Add(t.idle)
	_ = t.rc.SetReadDeadline(at)
	_ = t.rc.SetWriteDeadline(at)
}

// answer gives the response idle from now to go out, once the body is
// done with. The read deadline stays: a body that stalled is not read
// again.
func (t *transfer) answer() { _ = t.rc.SetWriteDeadline(time.Now().Add(t.idle)) }

// body returns r's body, each read of which first moves the deadlines:
// a read fails (os.ErrDeadlineExceeded) only when no byte arrives for
// idle.
func (t *transfer) body(r io.Reader) io.Reader { return progressReader{t, r} }

// writer returns w, each write to which first moves the deadlines. Writes
// go out in pieces of at most 32 KiB (io.Copy's buffer; the wrapper hides
// the response's ReadFrom, so no sendfile runs for the whole file under
// one deadline): each piece must leave within idle.
func (t *transfer) writer() http.ResponseWriter { return progressWriter{t.w, t} }

type progressReader struct {
	t *transfer
	r io.Reader
}

func (p progressReader) Read(b []byte) (int, error) {
	p.t.progress()
	return p.r.Read(b)
}

type progressWriter struct {
	http.ResponseWriter
	t *transfer
}

func (p progressWriter) Write(b []byte) (int, error) {
	p.t.progress()
	return p.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the response beneath.
func (p progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }
