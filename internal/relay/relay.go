// Package relay is the transport-independent core of the relay: topics,
// fan-out, bounded per-connection send queues, drop and close reasons, and
// counters.
//
// The core never listens. A transport (see internal/wsconn) authenticates a
// peer, wraps it in a Conn and hands it to Server.Accept together with the
// peer's Info (topic, permissions, expiry). Accept runs the connection until
// it ends.
//
// Delivery contract: a message from a connection allowed to write is queued,
// as the same shared bytes, for every other connection on the same topic that
// is allowed to read. Order is kept per sender and receiver. Enqueueing never
// blocks the sender: each receiver has a queue bounded in bytes, and when it
// is full the receiver loses whole messages (PolicyDrop, oldest first) or is
// closed with CloseSlowConsumer (PolicyClose). Every drop and every close is
// counted under a named reason.
//
// Node budget: the bytes in all queues together (payload plus
// MessageOverhead per message per receiver, including batches being
// written) are bounded by Config.QueueBudgetBytes, B. A connection's fair
// share is B divided by the number of open connections. A message is
// queued for a receiver only if, with it, the node's total stays within
// 3/4 B, or stays within B and the receiver's own queue stays within its
// fair share. So connections above their fair share (the slowest ones)
// can never take the last quarter of the budget from readers that keep
// up. When a message is refused, under PolicyDrop the receiver's own
// oldest queued messages are dropped until it fits, and the message
// itself if they are not enough, each counted as DropQueueBudget; under
// PolicyClose the receiver is closed with CloseSlowConsumer
// (ReasonQueueBudget). A Backpressure connection waits instead, as for
// its own limit, except that one with nothing queued takes the message
// regardless: only such connections can take the total beyond B, by at
// most one message each.
//
// Other nodes: a Server joins a cluster through Peers (SetPeers; see the
// interface for the exact contract), and knows nothing of how. It reports
// each topic's local interest (first reader arrived, last reader left) on
// a goroutine of its own, in order per topic, never under its lock and
// never holding up a connection. A message a local connection writes is
// offered to Peers.Forward once (not once per reader), after the local
// fan-out, while another node reads its topic (SetRemoteInterest; one
// atomic load per message otherwise). A message written on another node
// enters with Deliver and is queued like a local one, under the same
// bounds and drop reasons, never blocking; one that finds no local reader
// is counted (DropNoReaders), as are messages lost between nodes
// (DropBusLost). Publish is node-local.
//
// Locks: Server.mu guards the set of connections and topics and is never
// held on the per-message path (a connection keeps its topic's pointer;
// Publish and Deliver look topics up in a sync.Map). Lock order: Server.mu,
// then interestReports.mu; a connection's mu is taken with neither held.
// Peers is never called with a lock held.
//
// This package imports the standard library only (enforced by a test).
package relay

import (
	"errors"
	"fmt"
	"time"
)

// MessageType is the type of a message; the values match the websocket opcodes.
type MessageType uint8

// Message types.
const (
	Text   MessageType = 1
	Binary MessageType = 2
)

func (t MessageType) String() string {
	switch t {
	case Text:
		return "text"
	case Binary:
		return "binary"
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Message is one relayed message. Once handed to the Server its Data is shared
// by every receiver and must not be modified by anyone.
type Message struct {
	Type MessageType
	Data []byte
}

// CloseCode is a websocket close status code. The values the relay uses are
// part of the wire contract and documented in docs/protocol.md.
type CloseCode uint16

// Close codes used by the relay.
const (
	CloseNormal       CloseCode = 1000 // the peer or server ended the connection normally
	CloseGoingAway    CloseCode = 1001 // the server is shutting down, or the peer stopped answering pings
	CloseInvalidData  CloseCode = 1007 // a text message was not valid UTF-8
	ClosePolicy       CloseCode = 1008 // the peer broke a rule (e.g. wrote to a read-only system topic)
	CloseTooBig       CloseCode = 1009 // a message exceeded the maximum message size
	CloseInternal     CloseCode = 1011 // the server failed unexpectedly
	CloseTokenExpired CloseCode = 4001 // the token's exp passed
	CloseDenied       CloseCode = 4003 // an operator revoked the booking, subject or token
	CloseNoHost       CloseCode = 4004 // a shell session's host did not answer
	CloseSlowConsumer CloseCode = 4008 // the send queue overflowed under PolicyClose
	CloseSuperseded   CloseCode = 4009 // a shell host replaced by a newer connection
)

// CloseError reports that a connection was closed with a close frame. A Conn
// returns it from ReadMessage when the peer closed, or when the transport
// itself closed the connection with a known code (e.g. CloseTooBig).
type CloseError struct {
	Code   CloseCode
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("relay: closed with %d %s", e.Code, e.Reason)
}

// ErrShuttingDown is returned by Accept once Shutdown has begun.
var ErrShuttingDown = errors.New("relay: server shutting down")

// Conn is a message transport handed to Server.Accept. The Server calls
// ReadMessage from one goroutine, WriteMessages and Ping from another, and
// Close or Abort from any goroutine, possibly concurrently with the others.
type Conn interface {
	// ReadMessage blocks until the next message arrives. The returned slice
	// is owned by the caller from then on: the Server shares it with
	// receivers. Once the connection is closed it returns an error; a
	// *CloseError when a close code is known.
	ReadMessage() (MessageType, []byte, error)
	// WriteMessages writes msgs in order, ideally flushing once, and gives up
	// at deadline. It must not retain msgs or their data after returning.
	WriteMessages(msgs []Message, deadline time.Time) error
	// Ping checks that the peer is alive, returning an error if it does not
	// answer before deadline.
	Ping(deadline time.Time) error
	// Close sends a close frame with code and reason, waits briefly for the
	// peer's reply, then releases the connection. It is safe to call more
	// than once and after Abort.
	Close(code CloseCode, reason string) error
	// Abort releases the connection at once without a close handshake.
	Abort()
}

// Handshaker is implemented by a Conn whose transport has not yet told its
// peer that it is accepted (a websocket whose 101 response is held back).
// Accept calls Handshake once the connection is registered (and, for a
// reader in a cluster, once the other nodes know of it: Barrier), so that
// nothing sent to the topic after the peer's handshake is missed. An error
// from Handshake ends the connection.
type Handshaker interface {
	Handshake() error
}

// Info describes a connection: who it is and what it may do. The transport
// fills it from the verified token before calling Accept.
type Info struct {
	Topic     string
	Prefix    string
	CanRead   bool
	CanWrite  bool
	ExpiresAt time.Time // zero: no expiry
	// Identity is whom the connection belongs to (booking, subject and
	// token id): what revocations match (IdentityMatch).
	Identity
	Scopes     []string // as granted by the token; shared, never modified
	RemoteAddr string
	UserAgent  string
	// SystemTopic marks a topic only the server publishes to (e.g. stats):
	// a message from this connection is a policy violation (1008).
	SystemTopic bool
	// Backpressure makes a full send queue hold up the sender until there
	// is room, instead of dropping or closing: for 1:1 byte streams (see
	// Server.AcceptPair), where a lost message would corrupt the stream.
	Backpressure bool
	// Coalesce merges what is queued for this connection when its writer
	// takes it: each run of consecutive messages of one type becomes one
	// message, their data concatenated without delimiter (a text message
	// never carries a binary one). It is practable/relay's behaviour, kept
	// for hosts that lose a message arriving while they are busy; boundaries
	// are lost, so it is opt-in per topic (docs/migrating-from-practable.md).
	// Merges are counted (Stats.CoalescedFrames, CoalescedMessages).
	Coalesce bool
	// PingInterval, if not 0, replaces Config.PingInterval for this
	// connection (negative: never ping it): an event stream's heartbeat
	// has a default of its own.
	PingInterval time.Duration
}
