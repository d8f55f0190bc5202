package wire

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
)

// CodeRandomBytes is the entropy of a one-time code: 128 bits.
const CodeRandomBytes = 16

// codeRandomLen is the length of a code's random part: base64url of
// CodeRandomBytes, without padding (22 characters).
var codeRandomLen = base64.RawURLEncoding.EncodedLen(CodeRandomBytes)

// MaxNodeIDLen bounds the length of a node id.
const MaxNodeIDLen = 32

// NewCode returns a fresh one-time code naming nodeID: CodeRandomBytes
// random bytes in base64url without padding, ".", then the node id. The
// suffix lets a front end route the websocket to the node that holds the
// code.
func NewCode(nodeID string) string {
	var b [CodeRandomBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b[:]) + "." + nodeID
}

// ParseCode checks the form of a one-time code and returns the node id it
// names. It says nothing about whether the code was issued or is still
// valid.
func ParseCode(code string) (nodeID string, ok bool) {
	random, node, found := strings.Cut(code, ".")
	if !found || len(random) != codeRandomLen || !ValidNodeID(node) {
		return "", false
	}
	for i := 0; i < len(random); i++ {
		c := random[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	return node, true
}

// ValidNodeID reports whether id is a usable node id: 1 to MaxNodeIDLen
// characters of [a-z0-9-], so it is safe in a code, a URL, a NATS subject
// and a load balancer rule.
func ValidNodeID(id string) bool {
	if id == "" || len(id) > MaxNodeIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
