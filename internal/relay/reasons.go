package relay

// DropReason names why a message was not delivered to a receiver.
type DropReason uint8

// Drop reasons.
const (
	// DropQueueHead: the receiver's queue was full; its oldest queued
	// message was dropped to make room for a newer one.
	DropQueueHead DropReason = iota
	// DropQueueTail: the receiver's queue was full with messages already
	// being written, so the new message itself was dropped.
	DropQueueTail
	// DropNotPermitted: the sender has no write permission; its message was
	// discarded (counted once per message, not per receiver).
	DropNotPermitted
	// DropSenderClosed: a message to a back-pressure connection (a pair)
	// waited for room and its sender closed meanwhile.
	DropSenderClosed
	// DropQueueBudget: the node's queued bytes were at their budget
	// (Config.QueueBudgetBytes) and this receiver had to make room from its
	// own queue, or could not (see the package doc for the rule).
	DropQueueBudget
	// DropNoReaders: a message from another node (Server.Deliver) found no
	// local reader of its topic, typically while the node's interest was
	// being withdrawn. Counted on the node, once per message.
	DropNoReaders
	// DropBusLost: messages from another node were lost on the way (a gap
	// in the source's sequence, whatever the cause: the bus's bounded
	// queues, a failed publish). Counted on the node (Server.CountRemoteDrops).
	DropBusLost
	// NumDropReasons is the number of drop reasons.
	NumDropReasons
)

var dropReasonNames = [NumDropReasons]string{"queue_head", "queue_tail", "not_permitted", "sender_closed", "queue_budget",
	"no_readers", "bus_lost"}

func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropReasonNames[r]
	}
	return "unknown"
}

// CloseReason names why a connection ended.
type CloseReason uint8

// Close reasons.
const (
	ReasonPeerClosed   CloseReason = iota // the peer sent a close frame
	ReasonReadError                       // reading failed (network error, protocol error)
	ReasonWriteError                      // writing failed or timed out
	ReasonPingTimeout                     // the peer did not answer a ping
	ReasonTooBig                          // the peer sent a message over the size limit (1009)
	ReasonInvalidUTF8                     // the peer sent a text message that was not UTF-8 (1007)
	ReasonPolicy                          // the peer broke a rule (1008)
	ReasonTokenExpired                    // the token's exp passed (4001)
	ReasonDenied                          // an operator revoked the connection (4003)
	ReasonSlowConsumer                    // the send queue overflowed under PolicyClose (4008)
	ReasonShutdown                        // the server is shutting down (1001)
	ReasonServerClosed                    // closed by the server for another reason (CloseWhere)
	ReasonPairClosed                      // the other side of a pair closed (1000)
	ReasonNoHost                          // a shell session's host did not answer (4004)
	ReasonSuperseded                      // a shell host replaced by a newer one (4009)
	ReasonQueueBudget                     // the node's queue budget was reached under PolicyClose (4008)
	numCloseReasons
)

var closeReasonNames = [numCloseReasons]string{
	"peer_closed", "read_error", "write_error", "ping_timeout", "message_too_big", "invalid_utf8",
	"policy_violation", "token_expired", "denied", "slow_consumer", "shutdown", "server_closed",
	"pair_closed", "no_host", "superseded", "queue_budget",
}

func (r CloseReason) String() string {
	if r < numCloseReasons {
		return closeReasonNames[r]
	}
	return "unknown"
}

// DropReasons lists every drop reason, for exporting counters.
func DropReasons() []DropReason {
	rs := make([]DropReason, NumDropReasons)
	for i := range rs {
		rs[i] = DropReason(i)
	}
	return rs
}

// CloseReasons lists every close reason, for exporting counters.
func CloseReasons() []CloseReason {
	rs := make([]CloseReason, numCloseReasons)
	for i := range rs {
		rs[i] = CloseReason(i)
	}
	return rs
}
