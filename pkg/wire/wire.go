// Package wire is Switchboard's wire contract in one place: what the server
// and its clients must agree on. docs/protocol.md describes it for people;
// this package is its one source of truth for programs:
//
//   - the connection types, the {prefix} of POST /{prefix}/{topic}
//     (PrefixSession, PrefixShell, PrefixAgent);
//   - the one-time code: 128 random bits in base64url, ".", the id of the
//     node that holds it (NewCode, ParseCode, ValidNodeID);
//   - the codes of the JSON errors, {"error": {"code": …}}, that clients
//     branch on (ErrorCode);
//   - the websocket close codes, each with its documented name and what a
//     client should do next: a close is a value (Close), as a disconnect is
//     in centrifuge;
//   - the close reasons the relay counts, each with the close code it sends
//     (CloseReason);
//   - the response header naming the node that answered (HeaderNode).
//
// It imports only the standard library, so every side can use it: the
// server (access, control), pkg/client, the host agent and the load
// generators. internal/relay may import nothing outside the standard
// library, not even this module's packages, so it keeps its own copy of the
// close codes and reasons; a test there checks them against this package,
// code by code. Tests here check the tables against docs/protocol.md.
package wire

// Connection types: the first path segment of the access and websocket
// endpoints, and the "prefix" claim of a token, which must name the same
// one.
const (
	// PrefixSession is the connection type of shared topics: every message
	// goes to every other reader of the topic.
	PrefixSession = "session"
	// PrefixShell is the connection type of 1:1 sessions with a host (ssh,
	// a database, any TCP service), paired by the server.
	PrefixShell = "shell"
	// PrefixAgent is the connection type of host agents' control channels
	// (docs/jobs.md).
	PrefixAgent = "agent"
)

// HeaderNode is the response header naming the node that answered, on
// every response of `switchboard serve`, the websocket handshake's
// included: behind a load balancer, it tells which node served a request.
const HeaderNode = "Switchboard-Node"
