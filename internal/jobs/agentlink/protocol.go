package agentlink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// helloTimeout bounds the wait for an agent's hello.
const helloTimeout = 10 * time.Second

// protocolError is an agent that broke the control protocol: its channel
// is closed with code and reason.
type protocolError struct {
	code   relay.CloseCode
	reason string
}

func (e *protocolError) Error() string { return e.reason }

// readHello reads and checks the agent's first message.
func (l *Link) readHello(s *session) (*jobproto.Hello, error) {
	type result struct {
		h   *jobproto.Hello
		err error
	}
	got := make(chan result, 1)
	go func() {
		typ, data, err := s.conn.ReadMessage()
		if err != nil {
			got <- result{err: err}
			return
		}
		var h jobproto.Hello
		if typ != relay.Text || json.Unmarshal(data, &h) != nil || h.Type != jobproto.TypeHello {
			got <- result{err: &protocolError{relay.ClosePolicy, "the first message must be a hello"}}
			return
		}
		got <- result{h: &h}
	}()
	t := time.NewTimer(helloTimeout)
	defer t.Stop()
	select {
	case r := <-got:
		if r.err != nil {
			return nil, r.err
		}
		return r.h, checkHello(r.h, s.grant)
	case <-t.C:
		s.conn.Abort()
		<-got
		return nil, errors.New("no hello in time")
	}
}

// checkHello validates a hello against the agent's token.
func checkHello(h *jobproto.Hello, g jobs.AgentGrant) error {
	fail := func(format string, args ...any) error {
		return &protocolError{relay.ClosePolicy, fmt.Sprintf(format, args...)}
	}
	if h.Agent != g.ID {
		return fail("hello names agent %q; the token is for %q", jobs.Truncate(h.Agent, 64), g.ID)
	}
	if len(h.Labels) > jobproto.MaxLabels || len(h.Actions) > jobproto.MaxActions {
		return fail("too many labels or actions (at most %d and %d)", jobproto.MaxLabels, jobproto.MaxActions)
	}
	for _, l := range h.Labels {
		if !jobproto.ValidLabel(l) {
			return fail("label %q: want key=value", jobs.Truncate(l, 64))
		}
		if !labelAllowed(l, g.Labels) {
			return &protocolError{relay.ClosePolicy, wire.CloseTextLabelForbidden + ": the token does not allow label " + jobs.Truncate(l, 64)}
		}
	}
	seen := map[string]bool{}
	for i := range h.Actions {
		if err := h.Actions[i].Validate(); err != nil {
			return fail("%v", err)
		}
		if seen[h.Actions[i].Name] {
			return fail("action %s declared twice", h.Actions[i].Name)
		}
		seen[h.Actions[i].Name] = true
	}
	if len(h.Running) > 10000 || len(h.Results) > 10000 {
		return fail("too many running jobs or results listed")
	}
	return nil
}

// labelAllowed reports whether the token's labels allow l: the same
// "key=value", or "key=*".
func labelAllowed(l string, allowed []string) bool {
	key, _, _ := strings.Cut(l, "=")
	for _, a := range allowed {
		if a == l || a == key+"=*" {
			return true
		}
	}
	return false
}

// decodeMessage decodes a message after the hello: a jobproto.Started,
// Log or Result, or nil for a type this hub does not know (ignored, for
// newer agents).
func decodeMessage(data []byte) (any, error) {
	// Agents write the type first (jobproto's structs start with it): read
	// it from there, so that a message is parsed once, not twice (a
	// talkative action's log messages are the channel's bulk: the second
	// parse was a fifth of the hub's CPU). Anything else is parsed whole.
	var env jobproto.Envelope
	if t, ok := leadingType(data); ok {
		env.Type = t
	} else if err := json.Unmarshal(data, &env); err != nil {
		return nil, &protocolError{relay.ClosePolicy, "a control message is not a JSON object"}
	}
	switch env.Type {
	case jobproto.TypeStarted:
		var msg jobproto.Started
		if err := json.Unmarshal(data, &msg); err != nil {
			return nil, &protocolError{relay.ClosePolicy, "malformed started message"}
		}
		return msg, nil
	case jobproto.TypeLog:
		var msg jobproto.Log
		if err := json.Unmarshal(data, &msg); err != nil || len(msg.Lines) > jobproto.MaxLogLines {
			return nil, &protocolError{relay.ClosePolicy, "malformed log message"}
		}
		return msg, nil
	case jobproto.TypeResult:
		var msg jobproto.Result
		if err := json.Unmarshal(data, &msg); err != nil {
			return nil, &protocolError{relay.ClosePolicy, "malformed result message"}
		}
		return msg, nil
	}
	if !json.Valid(data) { // an unknown type is ignored, a malformed message is not
		return nil, &protocolError{relay.ClosePolicy, "a control message is not a JSON object"}
	}
	return nil, nil
}

// leadingType returns the type of a message that begins exactly with
// {"type":"<letters>", and false for any other beginning (the message is
// then parsed whole to find it). The rest of the message is validated by
// the typed parse that follows.
func leadingType(data []byte) (string, bool) {
	const prefix = `{"type":"`
	if !bytes.HasPrefix(data, []byte(prefix)) {
		return "", false
	}
	rest := data[len(prefix):]
	for i, c := range rest {
		switch {
		case c == '"':
			if i == 0 || i+1 >= len(rest) || rest[i+1] != ',' && rest[i+1] != '}' {
				return "", false
			}
			return string(rest[:i]), true
		case c < 'a' || c > 'z':
			return "", false
		}
	}
	return "", false
}
