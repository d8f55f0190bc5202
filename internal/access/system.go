package access

// The system's topics are those only the server publishes to: the topics of
// Config.SystemTopics (stats, agents) and every topic under a prefix of
// Config.SystemPrefixes (jobs/, the jobs' live logs). Who may read them is
// the system's decision, not a token issuer's:
//
//   - a system topic needs its scope (relay:stats) in the token, whatever the
//     token's topic;
//   - a topic under a system prefix is reached by a token for that one topic
//     (the server mints it for the job's owner, internal/web) or by a
//     pattern token ("*", "jobs/*") that also holds the prefix's scope
//     (jobs:admin); a pattern alone never reaches it.
//
// relay:admin allows every such scope (auth.Claims.Allows). The token API
// (internal/control) asks SystemScope before it mints a token for a topic.

import (
	"strings"

	"github.com/switchboard-hub/switchboard/internal/topic"
)

// SystemScope reports whether a token's topic (a name or a pattern) lies
// within the system's topics, and the scope a minter needs to grant it: a
// system topic itself, a name under a system prefix, or a pattern whose
// every topic is under one ("jobs/*", "jobs/j1/*"). Broader patterns ("*")
// are not within: they reach a system topic only with its scope in the
// token (above), so minting them is not the system's to refuse.
func (h *Handler) SystemScope(pattern string) (scope string, within bool) {
	if scope, ok := h.cfg.SystemTopics[pattern]; ok {
		return scope, true
	}
	name := pattern
	if base, ok := strings.CutSuffix(pattern, "/*"); ok {
		name = base + "/" // every topic the pattern reaches starts with it
	} else if topic.IsPattern(pattern) {
		return "", false // "*"
	}
	for p, scope := range h.cfg.SystemPrefixes {
		if strings.HasPrefix(name, p) {
			return scope, true
		}
	}
	return "", false
}

// systemPrefixScope returns the scope of the system prefix name is under.
func (h *Handler) systemPrefixScope(name string) (scope string, under bool) {
	for p, scope := range h.cfg.SystemPrefixes {
		if strings.HasPrefix(name, p) {
			return scope, true
		}
	}
	return "", false
}
