package relay

import (
	"fmt"
	"log/slog"
	"time"
)

// Policy says what happens when a receiver's send queue is full.
type Policy uint8

const (
	// PolicyDrop drops whole queued messages, oldest first, to make room.
	PolicyDrop Policy = iota
	// PolicyClose closes the receiver with CloseSlowConsumer.
	PolicyClose
)

func (p Policy) String() string {
	if p == PolicyClose {
		return "close"
	}
	return "drop"
}

// ParsePolicy parses "drop" or "close".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "drop", "":
		return PolicyDrop, nil
	case "close":
		return PolicyClose, nil
	}
	return 0, fmt.Errorf("relay: slow-consumer policy %q: want drop or close", s)
}

// Defaults for Config fields left zero.
const (
	// DefaultSendQueueBytes holds about 4 s of a 4 Mbit/s video stream, or
	// two maximum-size messages: a reader further behind than that is served
	// better by losing its oldest messages than by getting them late. It was
	// 8 MiB, which let 10,000 stalled readers pin 80 GB.
	DefaultSendQueueBytes  = 2 << 20
	DefaultMaxMessageBytes = 1 << 20
	DefaultWriteTimeout    = 10 * time.Second
	DefaultPingInterval    = 30 * time.Second
	DefaultPongTimeout     = 15 * time.Second
	DefaultCloseTimeout    = 5 * time.Second
)

// DefaultSendQueueFor is SendQueueBytes when left zero for a relay whose
// largest message is maxMessage bytes: DefaultSendQueueBytes, or room for
// two maximum-size messages if that is more (so that --max-message 10MiB
// alone is a valid configuration). Twice any size of at least
// MessageOverhead holds one message with its overhead.
func DefaultSendQueueFor(maxMessage int) int {
	return max(DefaultSendQueueBytes, 2*maxMessage)
}

// SystemTopicQueueBytes is the send queue bound of a reader of a system
// topic (Info.SystemTopic) when SendQueueBytes is smaller. The server
// publishes a report there as one burst of parts (the stats report of
// 10,000 connections is about 2.7 MB in ten parts), and a report that
// arrives in part is useless; such readers are few (operators' dashboards),
// and the node's QueueBudgetBytes bounds them like any other.
const SystemTopicQueueBytes = 16 << 20

// FallbackQueueBudgetBytes is the default QueueBudgetBytes where the
// machine's memory cannot be read (see DefaultQueueBudget).
const FallbackQueueBudgetBytes = 1 << 30

// MessageOverhead is the number of bytes each queued message counts for in
// addition to its payload, so that floods of tiny messages are bounded too.
const MessageOverhead = 32

// Config configures a Server. The zero value of every field means its default.
type Config struct {
	// SendQueueBytes bounds each connection's send queue, counting payload
	// plus MessageOverhead per message, including the batch being written.
	// Must be at least MaxMessageBytes + MessageOverhead. Default 2 MiB, or
	// two maximum-size messages if more (DefaultSendQueueFor).
	SendQueueBytes int
	// QueueBudgetBytes bounds the bytes in all send queues of the node
	// together, counted as SendQueueBytes counts them (so a message queued
	// for 100 readers counts 100 times, though its bytes are shared: the
	// budget bounds memory from above). When it is reached, the connections
	// holding more than their fair share lose messages or are closed, by
	// SlowConsumer, under DropQueueBudget / ReasonQueueBudget; the package
	// doc states the rule. Zero means DefaultQueueBudget(): a quarter of the
	// machine's or control group's memory. Must hold at least one
	// maximum-size message.
	QueueBudgetBytes int64
	// MaxMessageBytes is the largest message accepted from a peer; a larger
	// one closes the sender with CloseTooBig. Default 1 MiB.
	MaxMessageBytes int
	// SlowConsumer is the policy for a full send queue. Default PolicyDrop.
	SlowConsumer Policy
	// WriteTimeout bounds each batched write to a peer. Default 10 s.
	WriteTimeout time.Duration
	// PingInterval is how often the server pings each peer; negative
	// disables pings. Default 30 s.
	PingInterval time.Duration
	// PongTimeout is how long a peer has to answer a ping before it is
	// closed as dead. Default 15 s.
	PongTimeout time.Duration
	// CloseTimeout is how long a connection being closed by the server may
	// take to finish its pending write and send the close frame before it
	// is aborted (a stalled peer cannot take a close frame). Default 5 s.
	CloseTimeout time.Duration
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. Used for
	// connection timestamps and expiry.
	Now func() time.Time
	// OnConnect, if set, is called on the connection's goroutine once it
	// is registered; OnClose once it has closed, with why. They must not
	// block: they delay the connection they report on.
	OnConnect func(ConnStatus)
	OnClose   func(ConnStatus, CloseReason)
	// Denied, if set, is asked while a connection is being registered,
	// under the same lock as CloseWhere: a connection it denies is closed
	// with CloseDenied instead. So a revocation that first updates what
	// Denied answers and then calls CloseWhere cannot miss a connection
	// that is being admitted at that moment.
	Denied func(*Info) bool
}

func (c Config) withDefaults() (Config, error) {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = DefaultSendQueueFor(c.MaxMessageBytes)
	}
	if c.QueueBudgetBytes == 0 {
		// Never below one connection's queue, however small the machine.
		c.QueueBudgetBytes = max(DefaultQueueBudget(), int64(c.SendQueueBytes))
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.MaxMessageBytes < 0:
		return c, fmt.Errorf("relay: max message size %d: must be positive", c.MaxMessageBytes)
	case c.SendQueueBytes < c.MaxMessageBytes+MessageOverhead:
		return c, fmt.Errorf("relay: send queue %d bytes: must hold at least one maximum-size message (%d bytes)",
			c.SendQueueBytes, c.MaxMessageBytes+MessageOverhead)
	case c.QueueBudgetBytes < int64(c.MaxMessageBytes+MessageOverhead):
		return c, fmt.Errorf("relay: queue budget %d bytes: must hold at least one maximum-size message (%d bytes); 0 means a quarter of memory",
			c.QueueBudgetBytes, c.MaxMessageBytes+MessageOverhead)
	case c.WriteTimeout < 0:
		return c, fmt.Errorf("relay: write timeout %v: must be positive", c.WriteTimeout)
	case c.CloseTimeout < 0:
		return c, fmt.Errorf("relay: close timeout %v: must be positive", c.CloseTimeout)
	case c.PongTimeout < 0:
		return c, fmt.Errorf("relay: pong timeout %v: must be positive", c.PongTimeout)
	case c.SlowConsumer > PolicyClose:
		return c, fmt.Errorf("relay: unknown slow-consumer policy %d", c.SlowConsumer)
	}
	return c, nil
}
