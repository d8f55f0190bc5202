package jobproto

import "strings"

// MaxAgentIDLen bounds an agent id.
const MaxAgentIDLen = 64

// ValidAgentID reports whether id can name an agent everywhere it is used:
// 1-64 of [A-Za-z0-9._-], and not "." or ".." (the id is the agent control
// channel's topic, one topic segment). The host's configuration
// (internal/agent, agent.id) and the hub's enrolment
// (POST /api/v1/agents/enrol) accept the same ids.
func ValidAgentID(id string) bool {
	if id == "" || len(id) > MaxAgentIDLen || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidLabelGrant reports whether s can be one of the labels an agent's
// token allows: a label (ValidLabel), or "key=*", which allows the key
// with any value.
func ValidLabelGrant(s string) bool {
	if key, ok := strings.CutSuffix(s, "=*"); ok {
		return ValidLabel(key + "=")
	}
	return ValidLabel(s)
}
