package access

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"unicode/utf8"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/topic"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// ServePublish is POST wire.PublishPath (docs/protocol.md, "Publish over
// HTTP"): a backend publishes to session topics without holding a
// websocket. The body is one message — text/plain (a text message) or
// application/octet-stream (binary) to ?topic=, or a JSON object
// wire.PublishItem — or a batch, a JSON array of at most
// wire.MaxPublishBatch items. Requests are limited per client address
// (before the token is looked at) and per token (PublishLimits: 429 with
// Retry-After). Every item is checked as a websocket writer's access is
// (authorize: token, topic claim, scope write, revocations; system topics
// are read-only) and against the relay's message limit before any is
// published: a batch is refused whole or published whole. Each message
// then goes out as relay.Server.PublishShared sends it: to this node's
// readers and, while another node reads the topic, to the bus. Outcomes
// and published messages are counted (PublishStats).
func (h *Handler) ServePublish(w http.ResponseWriter, r *http.Request) {
	if !h.originAllowed(r) {
		h.refusePublish(w, apierr.New(http.StatusForbidden, wire.ErrorOriginForbidden, "origin not allowed"))
		return
	}
	h.setCORS(w, r)
	w.Header().Set("Access-Control-Expose-Headers", "Retry-After")
	if addr, ok := ClientIP(r, h.cfg.TrustedProxies); ok {
		if ok, wait := h.publishLimits.byAddress.Allow(addr); !ok {
			h.refusePublish(w, rateLimited(w, wait, "address"))
			return
		}
	}
	tok, e := BearerToken(r)
	if e != nil {
		h.refusePublish(w, e)
		return
	}
	c, e := h.verifyRelayToken(tok)
	if e != nil {
		h.refusePublish(w, e)
		return
	}
	if ok, wait := h.publishLimits.byToken.Allow(tokenOwner(tok)); !ok {
		h.refusePublish(w, rateLimited(w, wait, "token"))
		return
	}
	if c.Prefix != wire.PrefixSession {
		h.refusePublish(w, apierr.New(http.StatusForbidden, wire.ErrorPublishNotShared,
			fmt.Sprintf("the token is for connection type %q; only %s topics (shared) take HTTP publish", truncate(c.Prefix, 32), wire.PrefixSession)))
		return
	}
	msgs, batch, e := h.readPublish(w, r)
	if e != nil {
		h.refusePublish(w, e)
		return
	}
	ep := h.endpoint(wire.PrefixSession)
	for i, m := range msgs {
		if e := h.checkPublish(c, tok, ep, m); e != nil {
			if batch {
				e = apierr.New(e.Status, e.Code, fmt.Sprintf("item %d: %s", i, e.Message))
			}
			h.refusePublish(w, e)
			return
		}
	}
	results := make([]wire.PublishResult, len(msgs))
	for i, m := range msgs {
		queued, forwarded := h.cfg.Relay.PublishShared(m.topic, m.msg)
		results[i] = wire.PublishResult{Topic: m.topic, Queued: queued, Forwarded: forwarded}
	}
	h.publishCounts.published(msgs)
	h.publishCounts.outcome("ok")
	if batch {
		apierr.WriteJSON(w, http.StatusOK, results)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, results[0])
}

// refusePublish answers a publish request with e, counted under its code;
// a 401 gets the WWW-Authenticate challenge it needs.
func (h *Handler) refusePublish(w http.ResponseWriter, e *apierr.Error) {
	h.publishCounts.outcome(string(e.Code))
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	apierr.Write(w, e)
}

// publishMessage is one message of a publish request, read but not yet
// checked.
type publishMessage struct {
	topic string
	msg   relay.Message
}

// checkPublish refuses m unless c (tok's claims) may write its topic, the
// topic is not the system's, and m is within the relay's message limit.
func (h *Handler) checkPublish(c *auth.Claims, tok string, ep Endpoint, m publishMessage) *apierr.Error {
	if e := topic.Valid(m.topic); e != nil {
		return apierr.New(http.StatusBadRequest, wire.ErrorInvalidTopic, e.Error())
	}
	if len(m.msg.Data) > h.maxMessage {
		return apierr.New(http.StatusRequestEntityTooLarge, wire.ErrorMessageTooLarge, fmt.Sprintf("message of %d bytes; the limit is %d", len(m.msg.Data), h.maxMessage))
	}
	_, p, e := h.grant(c, tok, wire.PrefixSession, m.topic, ep)
	switch {
	case e != nil:
		return e
	case p.System:
		return apierr.New(http.StatusForbidden, wire.ErrorTopicReadOnly, "topic "+m.topic+" is written by the server only")
	case !p.CanWrite:
		return apierr.New(http.StatusForbidden, wire.ErrorScopeForbidden, "publishing needs scope write")
	}
	return nil
}

// readPublish reads the request's messages, by its content type, and
// reports whether the body was a batch (a JSON array).
func (h *Handler) readPublish(w http.ResponseWriter, r *http.Request) ([]publishMessage, bool, *apierr.Error) {
	media, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		media = ""
	}
	var typ relay.MessageType
	switch media {
	case "text/plain":
		typ = relay.Text
	case "application/octet-stream":
		typ = relay.Binary
	case "application/json":
		return h.readPublishJSON(w, r)
	default:
		return nil, false, apierr.New(http.StatusUnsupportedMediaType, wire.ErrorUnsupportedMediaType,
			"Content-Type must be text/plain, application/octet-stream or application/json")
	}
	data, e := readLimited(w, r, h.maxMessage)
	if e != nil {
		return nil, false, e
	}
	name := r.URL.Query().Get("topic")
	if name == "" {
		return nil, false, apierr.New(http.StatusBadRequest, wire.ErrorInvalidPublish, "a text/plain or application/octet-stream body needs ?topic=")
	}
	if typ == relay.Text && !utf8.Valid(data) {
		return nil, false, apierr.New(http.StatusBadRequest, wire.ErrorInvalidPublish, "a text message must be UTF-8; send binary as application/octet-stream")
	}
	return []publishMessage{{topic: name, msg: relay.Message{Type: typ, Data: data}}}, false, nil
}

// readPublishJSON reads a JSON object (one wire.PublishItem; its topic may
// come from ?topic= instead) or array (a batch), whose body may be
// wire.PublishBatchBodyFactor times the message limit.
func (h *Handler) readPublishJSON(w http.ResponseWriter, r *http.Request) ([]publishMessage, bool, *apierr.Error) {
	body, e := readLimited(w, r, wire.PublishBatchBodyFactor*h.maxMessage)
	if e != nil {
		return nil, false, e
	}
	var items []wire.PublishItem
	batch := bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("["))
	if batch {
		err := json.Unmarshal(body, &items)
		switch {
		case err != nil:
			return nil, false, apierr.New(http.StatusBadRequest, wire.ErrorInvalidPublish, "body is not a JSON array of {topic, data | data_b64}")
		case len(items) == 0:
			return nil, false, apierr.New(http.StatusBadRequest, wire.ErrorInvalidPublish, "empty batch")
		case len(items) > wire.MaxPublishBatch:
			return nil, false, apierr.New(http.StatusRequestEntityTooLarge, wire.ErrorBatchTooLarge, fmt.Sprintf("%d items; a batch holds at most %d", len(items), wire.MaxPublishBatch))
		}
	} else {
		var it wire.PublishItem
		if err := json.Unmarshal(body, &it); err != nil {
			return nil, false, apierr.New(http.StatusBadRequest, wire.ErrorInvalidPublish, "body is not a JSON object {topic, data | data_b64} or an array of them")
		}
		if it.Topic == "" {
			it.Topic = r.URL.Query().Get("topic")
		}
		items = []wire.PublishItem{it}
	}
	msgs := make([]publishMessage, len(items))
	for i, it := range items {
		m, err := publishItemMessage(it)
		if err != nil {
			msg := err.Error()
			if batch {
				msg = fmt.Sprintf("item %d: %s", i, msg)
			}
			return nil, false, apierr.New(http.StatusBadRequest, wire.ErrorInvalidPublish, msg)
		}
		msgs[i] = m
	}
	return msgs, batch, nil
}

// publishItemMessage turns a JSON item into a message: data is text,
// data_b64 binary.
func publishItemMessage(it wire.PublishItem) (publishMessage, error) {
	m := publishMessage{topic: it.Topic}
	switch {
	case it.Topic == "":
		return m, errors.New("no topic")
	case (it.Data == nil) == (it.DataB64 == nil):
		return m, errors.New("want exactly one of data (text) and data_b64 (binary)")
	case it.Data != nil:
		m.msg = relay.Message{Type: relay.Text, Data: []byte(*it.Data)}
	default:
		data, err := base64.StdEncoding.DecodeString(*it.DataB64)
		if err != nil {
			return m, errors.New("data_b64 is not standard base64")
		}
		m.msg = relay.Message{Type: relay.Binary, Data: data}
	}
	return m, nil
}

// readLimited reads r's body, refusing one over limit bytes with 413.
func readLimited(w http.ResponseWriter, r *http.Request, limit int) ([]byte, *apierr.Error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, apierr.New(http.StatusRequestEntityTooLarge, wire.ErrorMessageTooLarge, fmt.Sprintf("body over %d bytes", limit))
	case err != nil:
		return nil, apierr.New(http.StatusBadRequest, wire.ErrorInvalidPublish, "could not read the body")
	}
	return body, nil
}
