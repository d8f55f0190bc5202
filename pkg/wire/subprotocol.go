package wire

import "strings"

// The one-step connect: a client that can presents its token in the
// websocket handshake itself, as a subprotocol, instead of trading it for a
// one-time code first (docs/protocol.md, "Connect in one step"):
//
//	GET /{prefix}/{topic}   (websocket upgrade)
//	Sec-WebSocket-Protocol: switchboard.v1, switchboard.bearer.<token>
//
// The server checks the token as the access endpoint does, before the
// upgrade, and answers with Subprotocol — never with the bearer one. A
// browser can do it (new WebSocket(uri, ["switchboard.v1",
// "switchboard.bearer." + token])), and no token is ever in a URL. It is
// the scheme Kubernetes uses (base64url.bearer.authorization.k8s.io.<token>).
const (
	// Subprotocol is the relay's websocket subprotocol. A one-step
	// connect must offer it beside the bearer subprotocol, and the server
	// selects it; a server that does not select it did not take the token
	// (an older server, or practable/relay): use the two-step flow.
	Subprotocol = "switchboard.v1"
	// BearerSubprotocolPrefix starts the subprotocol that carries a token:
	// BearerSubprotocolPrefix + token.
	BearerSubprotocolPrefix = "switchboard.bearer."
)

// BearerSubprotocol returns the subprotocol that carries token, and whether
// token can be carried at all: a subprotocol is an HTTP token (RFC 6455
// §4.1, RFC 9110 §5.6.2), so every character must be a tchar. A JWT
// (base64url and dots) always can.
func BearerSubprotocol(token string) (string, bool) {
	if token == "" || !IsHTTPToken(token) {
		return "", false
	}
	return BearerSubprotocolPrefix + token, true
}

// IsHTTPToken reports whether s is a non-empty HTTP token (RFC 9110 §5.6.2):
// 1*tchar, tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" /
// "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA.
func IsHTTPToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
