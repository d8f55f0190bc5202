package wire

import "strconv"

// CloseCode is a websocket close status code (RFC 6455 §7.4).
type CloseCode uint16

// The close codes of the contract (docs/protocol.md, "Close codes"). The
// server sends all of them except CloseAbnormal.
const (
	CloseNormal    CloseCode = 1000 // the peer or server ended the connection normally
	CloseGoingAway CloseCode = 1001 // the server is shutting down, or the peer stopped answering pings
	// CloseAbnormal is never sent: a client reports it when the connection
	// dropped without a close frame.
	CloseAbnormal     CloseCode = 1006
	CloseInvalidData  CloseCode = 1007 // a text message was not valid UTF-8
	ClosePolicy       CloseCode = 1008 // the peer broke a rule (e.g. wrote to a read-only system topic)
	CloseTooBig       CloseCode = 1009 // a message exceeded the maximum message size
	CloseInternal     CloseCode = 1011 // the server failed unexpectedly
	CloseTokenExpired CloseCode = 4001 // the token's exp passed
	CloseDenied       CloseCode = 4003 // an operator revoked the booking, subject or token
	CloseNoHost       CloseCode = 4004 // a shell session's host did not answer, or went away
	CloseSlowConsumer CloseCode = 4008 // the send queue, or the node's queue budget, overflowed under --slow-consumer close
	CloseSuperseded   CloseCode = 4009 // a shell host or agent replaced by a newer connection
)

// CloseTextLabelForbidden begins the text of the ClosePolicy close the hub
// sends an agent whose hello claims a label its token does not allow.
// Retrying cannot help until the token or the agent's configuration
// changes, so agents back off long (docs/host.md).
const CloseTextLabelForbidden = "label_forbidden"

// Reconnect is what a client should do after a close.
type Reconnect uint8

// Reconnect advice. The zero value, ReconnectWithBackoff, is also the
// advice for a close code this package does not know.
const (
	// ReconnectWithBackoff: reconnect after a delay that grows with each
	// failure. The server went away or failed, the connection dropped, or
	// the client fell behind (and should read faster).
	ReconnectWithBackoff Reconnect = iota
	// ReconnectIfWanted: the connection ended normally; reconnect only if
	// the application wants more.
	ReconnectIfWanted
	// ReconnectWithNewToken: the token expired; get (or re-read) a fresh
	// token, then reconnect at once.
	ReconnectWithNewToken
	// ReconnectLater: the other side (a shell host) is missing; try again
	// after a long delay.
	ReconnectLater
	// ReconnectAfterFix: the client broke the protocol; retrying unchanged
	// fails the same way.
	ReconnectAfterFix
	// ReconnectNever: an operator, or a newer connection of the same host,
	// ended this one on purpose; do not reconnect on your own.
	ReconnectNever
)

var reconnectNames = [...]string{"with backoff", "if wanted", "with a new token", "later", "after a fix", "never"}

func (r Reconnect) String() string {
	if int(r) < len(reconnectNames) {
		return reconnectNames[r]
	}
	return "Reconnect(" + strconv.Itoa(int(r)) + ")"
}

// Retry reports whether a client should reconnect on its own, after the
// delay the advice names.
func (r Reconnect) Retry() bool {
	return r == ReconnectWithBackoff || r == ReconnectWithNewToken || r == ReconnectLater
}

// Close is one close of the contract: its code, its documented name, and
// what a client should do next.
type Close struct {
	Code      CloseCode
	Name      string // as in docs/protocol.md, e.g. "token expired"
	Reconnect Reconnect
}

// closes is the table of docs/protocol.md, "Close codes", in code order.
var closes = [...]Close{
	{CloseNormal, "normal closure", ReconnectIfWanted},
	{CloseGoingAway, "going away", ReconnectWithBackoff},
	{CloseAbnormal, "abnormal closure", ReconnectWithBackoff},
	{CloseInvalidData, "invalid data", ReconnectAfterFix},
	{ClosePolicy, "policy violation", ReconnectAfterFix},
	{CloseTooBig, "message too big", ReconnectAfterFix},
	{CloseInternal, "internal error", ReconnectWithBackoff},
	{CloseTokenExpired, "token expired", ReconnectWithNewToken},
	{CloseDenied, "denied", ReconnectNever},
	{CloseNoHost, "host unavailable", ReconnectLater},
	{CloseSlowConsumer, "slow consumer", ReconnectWithBackoff},
	{CloseSuperseded, "superseded", ReconnectNever},
}

// Closes returns every close of the contract, in code order.
func Closes() []Close { return append([]Close(nil), closes[:]...) }

// LookupClose returns the close of the contract with code c; ok is false
// for a code the contract does not name.
func LookupClose(c CloseCode) (cl Close, ok bool) {
	for _, cl := range closes {
		if cl.Code == c {
			return cl, true
		}
	}
	return Close{Code: c, Name: "unknown"}, false
}

// String returns the code's documented name, or "unknown".
func (c CloseCode) String() string {
	cl, _ := LookupClose(c)
	return cl.Name
}

// Reconnect returns what a client should do after a close with code c
// (ReconnectWithBackoff for a code the contract does not name).
func (c CloseCode) Reconnect() Reconnect {
	cl, _ := LookupClose(c)
	return cl.Reconnect
}

// CloseReason names why the relay ended a connection: the "reason" label of
// switchboard_closes_total, and relay.CloseReason's String.
type CloseReason string

// The relay's close reasons, each with the close code it sends (see Code).
const (
	ReasonPeerClosed   CloseReason = "peer_closed"      // the peer sent a close frame; the code is the peer's
	ReasonReadError    CloseReason = "read_error"       // reading failed (network or protocol error): no close frame
	ReasonWriteError   CloseReason = "write_error"      // writing failed or timed out: no close frame
	ReasonPingTimeout  CloseReason = "ping_timeout"     // 1001
	ReasonTooBig       CloseReason = "message_too_big"  // 1009
	ReasonInvalidUTF8  CloseReason = "invalid_utf8"     // 1007
	ReasonPolicy       CloseReason = "policy_violation" // 1008
	ReasonTokenExpired CloseReason = "token_expired"    // 4001
	ReasonDenied       CloseReason = "denied"           // 4003
	ReasonSlowConsumer CloseReason = "slow_consumer"    // 4008: the connection's send queue overflowed
	ReasonShutdown     CloseReason = "shutdown"         // 1001
	ReasonServerClosed CloseReason = "server_closed"    // 1000: closed by the server for another reason
	ReasonPairClosed   CloseReason = "pair_closed"      // 1000: the other side of a pair closed
	ReasonNoHost       CloseReason = "no_host"          // 4004
	ReasonSuperseded   CloseReason = "superseded"       // 4009
	ReasonQueueBudget  CloseReason = "queue_budget"     // 4008: the node's queue budget was reached
)

// closeReasons maps each reason to the code the server sends for it; 0
// when it sends none of its own.
var closeReasons = [...]struct {
	reason CloseReason
	code   CloseCode
}{
	{ReasonPeerClosed, 0},
	{ReasonReadError, 0},
	{ReasonWriteError, 0},
	{ReasonPingTimeout, CloseGoingAway},
	{ReasonTooBig, CloseTooBig},
	{ReasonInvalidUTF8, CloseInvalidData},
	{ReasonPolicy, ClosePolicy},
	{ReasonTokenExpired, CloseTokenExpired},
	{ReasonDenied, CloseDenied},
	{ReasonSlowConsumer, CloseSlowConsumer},
	{ReasonShutdown, CloseGoingAway},
	{ReasonServerClosed, CloseNormal},
	{ReasonPairClosed, CloseNormal},
	{ReasonNoHost, CloseNoHost},
	{ReasonSuperseded, CloseSuperseded},
	{ReasonQueueBudget, CloseSlowConsumer},
}

// CloseReasons returns every close reason.
func CloseReasons() []CloseReason {
	rs := make([]CloseReason, len(closeReasons))
	for i, e := range closeReasons {
		rs[i] = e.reason
	}
	return rs
}

// Known reports whether r is one of the close reasons.
func (r CloseReason) Known() bool {
	for _, e := range closeReasons {
		if e.reason == r {
			return true
		}
	}
	return false
}

// Code returns the close code the server sends when it ends a connection
// for reason r. ok is false when it sends none of its own: the peer closed
// first (ReasonPeerClosed: the code is the peer's), the connection broke
// (ReasonReadError, ReasonWriteError), or r is not a close reason.
func (r CloseReason) Code() (code CloseCode, ok bool) {
	for _, e := range closeReasons {
		if e.reason == r {
			return e.code, e.code != 0
		}
	}
	return 0, false
}
