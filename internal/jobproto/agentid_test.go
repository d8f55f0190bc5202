package jobproto

import (
	"strings"
	"testing"
)

func TestValidAgentID(t *testing.T) {
	for id, want := range map[string]bool{
		"c1": true, "data-server.UNL_2": true, strings.Repeat("a", 64): true,
		"": false, ".": false, "..": false, "a/b": false, "a b": false, "é": false, "*": false,
		strings.Repeat("a", 65): false,
	} {
		if got := ValidAgentID(id); got != want {
			t.Errorf("ValidAgentID(%q) = %v", id, got)
		}
	}
}

func TestValidLabelGrant(t *testing.T) {
	for l, want := range map[string]bool{
		"role=client": true, "site=*": true, "k=": true, "url=host:80/x": true,
		"role": false, "=x": false, "*=x": false, "k=a*": false, "k=**": false, "k=a b": false,
	} {
		if got := ValidLabelGrant(l); got != want {
			t.Errorf("ValidLabelGrant(%q) = %v", l, got)
		}
	}
}
