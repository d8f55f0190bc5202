package server

import "time"

// DefaultRequestTimeout is Config.RequestTimeout's default.
const DefaultRequestTimeout = 30 * time.Second

// requestTimeout returns the read and write deadline, counted from its
// arrival, that each request starts with (configured, or the default).
//
// net/http sets these deadlines on the connection for every request
// (http.Server ReadTimeout, WriteTimeout), after ReadHeaderTimeout has
// bounded the headers; that bounds every ordinary request and every
// net/http error answer. Requests that are long by nature move them
// before they pass, with http.ResponseController (internal/jobs): a WAIT
// to the end of its wait, an upload or a download forward each time bytes
// move, so it fails only when it stalls (jobs.Config
// TransferIdleTimeout). A hijacked websocket clears them and sets its own
// per write (internal/wsconn).
func requestTimeout(configured time.Duration) time.Duration {
	if configured <= 0 {
		return DefaultRequestTimeout
	}
	return configured
}
