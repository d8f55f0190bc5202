// Package bench holds the load generators behind `switchboard bench`: the
// scenarios (Fanout: writers and readers on one or more topics;
// TCPBaseline: the same over plain loopback TCP; both run by runScenario;
// Latency, Access, RateSearch, Soak, Conns, Deny; Publish: HTTP publish
// and event-stream readers), the helpers
// they share (a child relay server, token minting, /proc sampling) and a
// lock-free log-linear latency histogram.
//
// Every scenario runs on loopback only, is bounded in time and stops by
// itself. Clients use pkg/client, so a scenario measures the relay and the
// public client together.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Defaults of FanoutOptions.
const (
	DefaultTopic          = "bench/fanout"
	DefaultReaders        = 100
	DefaultSize           = 1024
	DefaultDuration       = 10 * time.Second
	DefaultWarmup         = time.Second
	DefaultDrain          = 3 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	// MinSize is the smallest payload: a send time and a sequence number.
	MinSize = headerSize

	// syncTimeout bounds the wait for every reader to be subscribed.
	syncTimeout = 10 * time.Second
	// syncInterval is how often probes are sent while waiting for readers.
	syncInterval = 2 * time.Millisecond
	// dialParallel is how many relay connections are dialled at once.
	dialParallel = 16
	// closeTimeout bounds closing the connections at the end.
	closeTimeout = 5 * time.Second
)

// Payload header: bytes 0-7 the send time (UnixNano, little endian), bytes
// 8-15 the sequence number (bits 0-39), the writer's number within its topic
// (bits 40-55) and flags in the top bits.
const (
	headerSize   = 16
	flagProbe    = uint64(1) << 63 // subscription probe, not a data message
	flagEnd      = uint64(1) << 62 // end of stream; the sequence is the number of data messages sent
	flagMeasured = uint64(1) << 61 // sent inside the measured window
	flagEcho     = uint64(1) << 60 // latency: the echo of a message
	seqMask      = uint64(1)<<40 - 1
	writerShift  = 40
	writerMask   = uint64(1)<<16 - 1
	// MaxWriters is the largest number of writers per topic.
	MaxWriters = int(writerMask) + 1
)

// FanoutOptions configure Fanout. Zero values mean the defaults above.
type FanoutOptions struct {
	// URL is the relay's base URL (loopback only). Required.
	URL string
	// Token grants read and write on Topic. If empty, tokens are minted
	// with Secret.
	Token string
	// Secret signs minted tokens (HS256), with URL as the audience.
	Secret []byte
	// Topic is the topic used (default bench/fanout).
	Topic string
	// Readers is the number of reader connections per topic (default 100).
	Readers int
	// Writers is the number of writer connections per topic (default 1).
	// With more than one writer and a secret, writers get write-only
	// tokens, so that they do not receive each other's messages.
	Writers int
	// Topics is the number of topics (default 1). One topic is named Topic;
	// more are named Topic/0, Topic/1, …, and a Token must then grant the
	// pattern Topic/*.
	Topics int
	// Size is the payload size in bytes (default 1024, at least MinSize).
	Size int
	// Rate is each writer's rate in messages per second; 0 means unpaced.
	// Paced writers are spread evenly over one interval.
	Rate float64
	// Duration is the measured window (default 10 s).
	Duration time.Duration
	// Warmup precedes the measured window; its messages are not measured
	// (default 1 s; negative means none).
	Warmup time.Duration
	// Drain bounds the wait for the last messages after the writer stops
	// (default 3 s).
	Drain time.Duration
	// ConnectTimeout bounds connecting all readers and the writer
	// (default 30 s).
	ConnectTimeout time.Duration
	// Client configures every connection; nil means the client's defaults.
	Client *client.Options
	// ReaderClient is how readers read: ReaderClientLean (the default: a
	// minimal frame reader, as tcp-baseline's readers are minimal) or
	// ReaderClientPkg (pkg/client, what applications use).
	ReaderClient string
	// ServerPID, if positive, is the relay's process id: its CPU time in the
	// measured window and its peak RSS are reported.
	ServerPID int
}

func (o *FanoutOptions) withDefaults() (FanoutOptions, error) {
	c, err := o.scenarioDefaults(0)
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	switch {
	case err != nil:
		return c, err
	case c.Token == "" && len(c.Secret) == 0:
		return c, errors.New("bench: a token or a secret is needed")
	}
	if err := CheckLoopbackURL(c.URL); err != nil {
		return c, err
	}
	switch c.ReaderClient {
	case "":
		c.ReaderClient = ReaderClientLean
		if strings.HasPrefix(c.URL, "https:") || strings.HasPrefix(c.URL, "wss:") {
			c.ReaderClient = ReaderClientPkg // the lean reader has no TLS
		}
	case ReaderClientLean, ReaderClientPkg:
	default:
		return c, fmt.Errorf("bench: reader client %q: want %q or %q", c.ReaderClient, ReaderClientLean, ReaderClientPkg)
	}
	return c, nil
}

// scenarioDefaults fills in and checks what every scenario has: readers,
// size (at most maxSize if positive), rate, duration, warm-up, drain and
// connect timeout.
func (o *FanoutOptions) scenarioDefaults(maxSize int) (FanoutOptions, error) {
	c := *o
	if c.Readers == 0 {
		c.Readers = DefaultReaders
	}
	if c.Writers == 0 {
		c.Writers = 1
	}
	if c.Topics == 0 {
		c.Topics = 1
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	defaultTiming(&c.Duration, &c.Warmup, &c.Drain, &c.ConnectTimeout)
	switch {
	case c.Readers < 1:
		return c, fmt.Errorf("bench: readers %d: want at least 1", c.Readers)
	case c.Writers < 1 || c.Writers > MaxWriters:
		return c, fmt.Errorf("bench: writers %d: want 1 to %d", c.Writers, MaxWriters)
	case c.Topics < 1:
		return c, fmt.Errorf("bench: topics %d: want at least 1", c.Topics)
	case maxSize > 0 && (c.Size < MinSize || c.Size > maxSize):
		return c, fmt.Errorf("bench: size %d: want %d to %d bytes", c.Size, MinSize, maxSize)
	case c.Size < MinSize:
		return c, fmt.Errorf("bench: size %d: want at least %d bytes", c.Size, MinSize)
	case c.Rate < 0:
		return c, fmt.Errorf("bench: rate %v: want 0 (unpaced) or a positive rate", c.Rate)
	case c.Duration < 0:
		return c, fmt.Errorf("bench: duration %v: must be positive", c.Duration)
	}
	return c, nil
}

// LatencyUS are latency quantiles in microseconds.
type LatencyUS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// FanoutResult is the outcome of Fanout. Counts cover the measured window:
// messages the writer sent in it and their deliveries.
type FanoutResult struct {
	URL     string  `json:"url"`
	Topic   string  `json:"topic,omitempty"` // empty for tcp-baseline
	Readers int     `json:"readers"`         // per topic
	Writers int     `json:"writers"`         // per topic
	Topics  int     `json:"topics"`
	Size    int     `json:"size"`
	Rate    float64 `json:"rate"` // requested, per writer; 0 = unpaced
	// ReaderClient is how the readers read (lean or pkg); empty for
	// tcp-baseline.
	ReaderClient string `json:"reader_client,omitempty"`

	DurationSec float64 `json:"duration_sec"` // measured window, as it happened
	WarmupSec   float64 `json:"warmup_sec"`
	ConnectSec  float64 `json:"connect_sec"` // connecting and subscribing every connection
	DrainSec    float64 `json:"drain_sec"`   // from the writer's end until every reader had everything (or gave up)

	Sent            uint64  `json:"sent"` // by all writers
	SentPerSec      float64 `json:"sent_per_sec"`
	Delivered       uint64  `json:"delivered"`         // sum over readers
	DeliveredPerSec float64 `json:"delivered_per_sec"` // delivered over the measured window
	// DeliveredPerSecWithDrain is delivered over the measured window plus
	// the drain: lower than DeliveredPerSec when the readers were far
	// behind at the end (deliveries made during the drain count in both).
	DeliveredPerSecWithDrain float64 `json:"delivered_per_sec_with_drain"`
	MBPerSec                 float64 `json:"mb_per_sec"` // delivered payload, 1 MB = 1e6 bytes
	// ReceivedInWindow counts data messages that readers received while
	// the clock was in the measured window, whenever they were sent: with
	// a backlog from the warm-up (unpaced, many readers) few measured
	// messages arrive in time, and this is the rate the relay delivered at.
	ReceivedInWindow       uint64    `json:"received_in_window"`
	ReceivedInWindowPerSec float64   `json:"received_in_window_per_sec"`
	LatencyUS              LatencyUS `json:"latency_us"` // one-way, writer send to reader receipt
	// Drops is, summed over readers, measured messages sent to the
	// reader's topic minus those it received.
	Drops uint64 `json:"drops"`
	// Gaps is, summed over readers, the messages missing from their
	// sequence (whole run, warm-up included).
	Gaps uint64 `json:"gaps"`
	// Reordered counts messages that arrived with a sequence number at or
	// below one already seen (out of order or duplicated); never counted as
	// delivered. Any is a relay bug.
	Reordered uint64 `json:"reordered"`
	// ReaderErrors counts readers whose connection failed before the end.
	ReaderErrors int    `json:"reader_errors"`
	FirstError   string `json:"first_error,omitempty"`
	// Incomplete counts readers that had not seen the end of the stream
	// when the drain period ran out.
	Incomplete int `json:"incomplete"`

	// WriterMaxLateUS (paced runs) is the longest any measured message was
	// sent after its due time: large values mean the writers could not
	// keep to the schedule, so the rate was not what was asked.
	WriterMaxLateUS *float64 `json:"writer_max_late_us,omitempty"`

	ClientCPUSec       float64  `json:"client_cpu_sec"` // this process, measured window
	ServerCPUSec       *float64 `json:"server_cpu_sec,omitempty"`
	ServerPeakRSSBytes *int64   `json:"server_peak_rss_bytes,omitempty"`
}

// Fanout runs the fan-out scenario through the relay: on each of
// opts.Topics topics, opts.Writers writers and opts.Readers readers. It
// connects everything, waits until every reader receives a probe, lets the
// writers send for Warmup+Duration, waits up to Drain for the readers to see
// the end of every writer's stream, closes everything and returns the
// measurements. It returns an error if it could not connect or a writer
// failed; reader failures are reported in the result.
func Fanout(ctx context.Context, opts FanoutOptions) (FanoutResult, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return FanoutResult{}, err
	}
	topics := FanoutTopics(o.Topic, o.Topics)
	readTok, writeTok := o.Token, o.Token
	if o.Token == "" {
		ttl := o.ConnectTimeout + syncTimeout + o.Warmup + o.Duration + o.Drain + time.Hour
		pattern := o.Topic
		if o.Topics > 1 {
			pattern = o.Topic + "/*"
		}
		if readTok, err = MintToken(o.Secret, o.URL, pattern, ttl); err != nil {
			return newResult(o), err
		}
		writeTok = readTok
		if o.Writers > 1 {
			writeTok, err = mintToken(o.Secret, o.URL, ttl, func(c *auth.Claims) {
				c.Topic, c.Prefix, c.Scopes = pattern, client.DefaultPrefix, []string{auth.ScopeWrite}
			})
			if err != nil {
				return newResult(o), err
			}
		}
	}
	return runScenario(ctx, o, &wsTransport{url: o.URL, topics: topics, readToken: readTok, writeToken: writeTok, opts: o.Client, lean: o.ReaderClient != ReaderClientPkg, size: o.Size})
}

// FanoutTopics returns the names of n fan-out topics based on topic: topic
// itself for one, topic/0 … topic/n-1 for more.
func FanoutTopics(topic string, n int) []string {
	if n <= 1 {
		return []string{topic}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s/%d", topic, i)
	}
	return names
}

// wsTransport connects to the relay's topics with pkg/client.
type wsTransport struct {
	url                   string
	topics                []string
	readToken, writeToken string
	opts                  *client.Options
	lean                  bool // readers are leanConns, not pkg/client
	size                  int  // payload size, for the readers' buffers
}

func (t *wsTransport) parallelDials() int { return dialParallel }

func (t *wsTransport) dialReader(ctx context.Context, topic int) (msgConn, error) {
	if t.lean {
		uri, err := client.Access(ctx, t.url, t.topics[topic], t.readToken, t.opts)
		if err != nil {
			return nil, err
		}
		var h http.Header
		if t.opts != nil {
			h = t.opts.Header
		}
		return dialLean(ctx, uri, h, t.size)
	}
	c, err := client.Dial(ctx, t.url, t.topics[topic], t.readToken, t.opts)
	if err != nil {
		return nil, err
	}
	return &wsConn{Conn: c, buf: make([]byte, 0, 2*t.size+64)}, nil
}

func (t *wsTransport) dialWriter(ctx context.Context, topic int) (msgConn, error) {
	c, err := client.Dial(ctx, t.url, t.topics[topic], t.writeToken, t.opts)
	if err != nil {
		return nil, err
	}
	// The writer reads too, so that it answers pings and sees a close.
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return &wsConn{Conn: c}, nil
}

// wsConn is a relay connection; messages are binary.
type wsConn struct {
	*client.Conn
	buf []byte // reused by ReadMessage
}

func (c *wsConn) WriteMessage(ctx context.Context, p []byte) error {
	return c.Write(ctx, client.Binary, p)
}

func (c *wsConn) ReadMessage() ([]byte, error) {
	// No Done: no timer per read in the websocket library.
	_, data, err := c.ReadInto(context.Background(), c.buf)
	if err != nil {
		return nil, err
	}
	c.buf = data
	return data, nil
}

// MintToken returns an HS256 token signed with secret granting read and
// write on topic (prefix session) for ttl, with audience baseURL.
func MintToken(secret []byte, baseURL, topic string, ttl time.Duration) (string, error) {
	return mintToken(secret, baseURL, ttl, func(c *auth.Claims) {
		c.Topic, c.Prefix, c.Scopes = topic, client.DefaultPrefix, []string{auth.ScopeRead, auth.ScopeWrite}
	})
}

// CheckLoopbackURL returns an error unless raw is an http(s) or ws(s) URL
// whose host is a loopback address or "localhost".
func CheckLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bench: URL %q: want http://127.0.0.1:PORT", raw)
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return fmt.Errorf("bench: URL %q: want http://127.0.0.1:PORT", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("bench: URL %q: only loopback addresses are allowed", raw)
}

// defaultTiming fills in the timing options every scenario shares: a zero
// duration is DefaultDuration; a zero warm-up DefaultWarmup and a negative
// one none; drain and connect timeout, if not positive, their defaults.
func defaultTiming(duration, warmup, drain, connectTimeout *time.Duration) {
	if *duration == 0 {
		*duration = DefaultDuration
	}
	if *warmup == 0 {
		*warmup = DefaultWarmup
	} else if *warmup < 0 {
		*warmup = 0
	}
	if *drain <= 0 {
		*drain = DefaultDrain
	}
	if *connectTimeout <= 0 {
		*connectTimeout = DefaultConnectTimeout
	}
}
