package access

import (
	"net/http"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/sseconn"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Server-sent events: GET /{prefix}/{topic}?code=CODE with
// Accept: text/event-stream and no websocket upgrade is the code exchange
// of a read-only relay reader whose messages arrive as an event stream
// (internal/sseconn; docs/protocol.md "Server-sent events"). Everything
// before the transport is the websocket path's (serveWebsocket, redeem,
// connect): the same checks, answers and limits.

// wantsEventStream reports whether r asks for an event stream: its Accept
// header names text/event-stream (as EventSource sends it).
func wantsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for t := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(t, ";")
			if strings.EqualFold(strings.TrimSpace(mt), sseconn.ContentType) {
				return true
			}
		}
	}
	return false
}

// serveEventStream is serveWebsocket's code exchange for an event stream,
// after the path and Origin checks. The stream only reads: a token that
// may also write gets a read-only stream (what it writes could not arrive
// anyway), one that may only write is refused (403 scope_forbidden). Only
// shared session topics stream: the 1:1 connection types (shell, agent)
// need both directions, and are refused as a GET without an upgrade is.
// Last-Event-ID is refused before the code is used up: the relay keeps no
// history to resume from, and a client that reconnects needs a new code.
func (h *Handler) serveEventStream(w http.ResponseWriter, r *http.Request, stage, prefix, name string, ep Endpoint) {
	if prefix != wire.PrefixSession {
		w.Header().Set("Upgrade", "websocket")
		h.refuse(w, stage, apierr.New(http.StatusUpgradeRequired, wire.ErrorUpgradeRequired, "connection type "+prefix+" needs a websocket; only "+wire.PrefixSession+" topics stream server-sent events"))
		return
	}
	if r.Header.Get("Last-Event-ID") != "" {
		h.refuse(w, stage, apierr.New(http.StatusBadRequest, wire.ErrorLastEventIDUnsupported, "the relay keeps no history: an event stream cannot resume (Last-Event-ID); request a new code and read from now"))
		return
	}
	g, e := h.redeem(r.Context(), r.URL.Query().Get("code"), prefix, name)
	if e != nil {
		h.refuse(w, stage, e)
		return
	}
	if !g.CanRead {
		h.refuse(w, stage, apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, "an event stream only reads: the token needs scope read"))
		return
	}
	g.CanWrite = false
	h.setCORS(w, r)
	h.connect(w, r, stage, ep, g, true)
}
