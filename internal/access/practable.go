package access

// Compatibility with practable/relay's clients (docs/migrating-from-practable.md):
//
//   - Config.Coalesce: readers of matching session topics get what is queued
//     for them merged into one message when their writer takes it
//     (relay.Info.Coalesce), as practable's relay does, for hosts that lose
//     a message arriving while they are busy.
//   - Config.PractableStats: practable's stats feed. A session token for the
//     stats topic that holds the operator's scope but not the stats topic's
//     own (relay:stats) joins PractableStatsRelayTopic, where the server
//     publishes practable's report (internal/control); a message such a
//     connection writes is relayed to the feed's other readers, as on
//     practable's stats topic, and one that is {"cmd":"update"} asks for a
//     report at once.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/topic"
)

// PractableStatsTopic is the topic practable's stats consumers
// (practable/status) connect to: /session/stats.
const PractableStatsTopic = "stats"

// PractableStatsRelayTopic is the relay topic of practable's stats feed. No
// client names it (topic names never contain "#"), so it is reached only
// through PractableStatsTopic with a token Config.PractableStats admits.
const PractableStatsRelayTopic = "stats#practable"

// rolePractableStats marks a Permit for practable's stats feed.
const rolePractableStats = "practable-stats"

// PractableStats configures practable's stats feed.
type PractableStats struct {
	// Scope is what a token for PractableStatsTopic must hold to read the
	// feed (practable/status uses "read"). Required.
	Scope string
	// Update is called, without blocking, when a connection of the feed
	// writes {"cmd":"update"}: the publisher sends a report at once.
	Update func()
}

// validCoalesce checks Config.Coalesce's patterns: topic patterns
// (expt42/control, expt42/*, *) or segment globs (coalesceGlob).
func validCoalesce(patterns []string) error {
	for _, p := range patterns {
		if topic.ValidPattern(p) == nil {
			continue
		}
		if err := validCoalesceGlob(p); err != nil {
			return fmt.Errorf("access: coalesce pattern %q (--coalesce): %w", p, err)
		}
	}
	return nil
}

// A coalesce glob is a topic name some of whose segments hold "*", which
// matches any run of characters within that one segment: "expt*/control"
// matches expt01/control and expt-b/control, not expt01/sub/control — the
// way practable labs name their experiments' command topics. Topic patterns
// keep their own meaning ("expt42/*" matches at any depth).
func validCoalesceGlob(p string) error {
	if !strings.Contains(p, "*") {
		return topic.ErrInvalid
	}
	// A glob is valid when putting a letter for each "*" gives a valid name:
	// the other characters follow the topic grammar.
	if err := topic.Valid(strings.ReplaceAll(p, "*", "x")); err != nil {
		return err
	}
	if _, err := path.Match(p, ""); err != nil {
		return err
	}
	return nil
}

// coalesceMatch reports whether the session topic name matches one
// --coalesce pattern (a topic pattern or a segment glob).
func coalesceMatch(pattern, name string) bool {
	if topic.ValidPattern(pattern) == nil {
		return topic.Match(pattern, name)
	}
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

// coalesces reports whether readers of the session topic name get their
// queued messages merged (Config.Coalesce).
func (h *Handler) coalesces(name string) bool {
	for _, p := range h.cfg.Coalesce {
		if coalesceMatch(p, name) {
			return true
		}
	}
	return false
}

// practableStatsPermit returns the Permit of practable's stats feed if c is
// a token for it: PractableStats is configured, the topic is
// PractableStatsTopic and so is the token's topic claim (as practable's
// tokens name it: a pattern such as "*" never reaches the feed, which lists
// every session's address and user agent), and c holds the configured
// scope but not systemScope (a token that does reads Switchboard's own
// stats feed, as before). Writing needs the write scope, as on practable's
// relay.
func (h *Handler) practableStatsPermit(c *auth.Claims, name, systemScope string) (Permit, bool) {
	ps := h.cfg.PractableStats
	if ps == nil || name != PractableStatsTopic || c.Topic != PractableStatsTopic ||
		(systemScope != "" && c.Allows(systemScope)) || !c.Allows(ps.Scope) {
		return Permit{}, false
	}
	return Permit{CanRead: true, CanWrite: c.HasScope(auth.ScopeWrite), Role: rolePractableStats, Local: true}, true
}

// updateTap passes a connection of practable's stats feed through, calling
// update when it writes a stats command {"cmd":"update"}.
type updateTap struct {
	relay.Conn
	update func()
}

func (u updateTap) ReadMessage() (relay.MessageType, []byte, error) {
	typ, data, err := u.Conn.ReadMessage()
	if err == nil && u.update != nil && isUpdateCommand(data) {
		u.update()
	}
	return typ, data, err
}

// Handshake implements relay.Handshaker for a transport that holds its
// handshake back; for one that does not, there is nothing to complete.
func (u updateTap) Handshake() error {
	if hs, ok := u.Conn.(relay.Handshaker); ok {
		return hs.Handshake()
	}
	return nil
}

// isUpdateCommand reports whether data is practable's stats command
// {"cmd":"update"} (crossbar's StatsCommand).
func isUpdateCommand(data []byte) bool {
	if !bytes.Contains(data, []byte(`"cmd"`)) {
		return false
	}
	var cmd struct {
		Command string `json:"cmd"`
	}
	return json.Unmarshal(data, &cmd) == nil && cmd.Command == "update"
}
