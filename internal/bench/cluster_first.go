package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Defaults of FirstMessageOptions.
const (
	DefaultFirstMessageTopic    = "bench/first"
	DefaultFirstMessageRounds   = 10_000
	DefaultFirstMessageParallel = 8
	// DefaultFirstMessageTimeout is how long a reader waits for the message
	// before it counts as lost.
	DefaultFirstMessageTimeout = 2 * time.Second
	// firstMessageSize is the message's size: a send time and the round.
	firstMessageSize = headerSize
	// maxLostListed bounds the lost rounds' topics kept in the result.
	maxLostListed = 10
)

// FirstMessageOptions configure FirstMessage.
type FirstMessageOptions struct {
	// Topic: round i uses Topic/i (default bench/first).
	Topic string
	// Rounds (default 10,000), Parallel rounds at once (default 8).
	Rounds, Parallel int
	// Timeout is how long a reader waits for its message (default 2 s).
	Timeout time.Duration
	// Client configures the writers and the access requests.
	Client *client.Options
}

// FirstMessageResult is what FirstMessage measured.
type FirstMessageResult struct {
	Scenario    string   `json:"scenario"` // "first-message"
	WriterNode  string   `json:"writer_node"`
	ReaderNodes []string `json:"reader_nodes"`
	Rounds      int      `json:"rounds"`
	Parallel    int      `json:"parallel"`
	TimeoutSec  float64  `json:"timeout_sec"`
	// Delivered counts rounds whose reader got the message; Lost those
	// whose reader got nothing within the timeout. Errors counts rounds
	// that could not run (a connection failed): neither lost nor delivered.
	Delivered  int      `json:"delivered"`
	Lost       int      `json:"lost"`
	LostTopics []string `json:"lost_topics,omitempty"` // the first few
	Errors     int      `json:"errors"`
	FirstError string   `json:"first_error,omitempty"`
	// HandshakeUS is the reader's access request and websocket handshake;
	// DeliveryUS the message's one-way time, writer send to reader receipt.
	HandshakeUS LatencyUS  `json:"handshake_us"`
	DeliveryUS  LatencyUS  `json:"delivery_us"`
	DurationSec float64    `json:"duration_sec"`
	CPU         ClusterCPU `json:"cpu"`
}

// FirstMessage checks the subscribe barrier across nodes: Rounds times, on
// a new topic each, a writer connects to the first node; a reader then
// connects to another node (round robin over the others) and, as soon as
// its websocket handshake has returned, the writer sends one message. A
// round whose reader does not receive it within Timeout is lost.
func FirstMessage(ctx context.Context, t ClusterTarget, o FirstMessageOptions) (FirstMessageResult, error) {
	if o.Topic == "" {
		o.Topic = DefaultFirstMessageTopic
	}
	if o.Rounds <= 0 {
		o.Rounds = DefaultFirstMessageRounds
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultFirstMessageParallel
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultFirstMessageTimeout
	}
	res := FirstMessageResult{Scenario: "first-message", Rounds: o.Rounds, Parallel: o.Parallel, TimeoutSec: o.Timeout.Seconds()}
	if err := t.check(2); err != nil {
		return res, err
	}
	res.WriterNode = t.Nodes[0].ID
	for _, n := range t.Nodes[1:] {
		res.ReaderNodes = append(res.ReaderNodes, n.ID)
	}
	tokens := make([]string, len(t.Nodes))
	for i, n := range t.Nodes {
		var err error
		tokens[i], err = mintToken(t.Secret, n.Audience, 24*time.Hour, func(c *auth.Claims) {
			c.Topic, c.Prefix, c.Scopes = o.Topic+"/*", client.DefaultPrefix, []string{auth.ScopeRead, auth.ScopeWrite}
		})
		if err != nil {
			return res, err
		}
	}
	// Access requests over keep-alive connections; websockets each on a
	// new connection (as clients make them).
	copts := client.Options{Retries: noClientRetries}
	if o.Client != nil {
		copts = *o.Client
	}
	if copts.HTTPClient == nil {
		tr := &http.Transport{MaxIdleConnsPerHost: 2 * o.Parallel, IdleConnTimeout: 30 * time.Second}
		defer tr.CloseIdleConnections()
		copts.HTTPClient = &http.Client{Transport: tr}
	}

	type stats struct {
		delivered, lost, errs int
		lostTopics            []string
		firstErr              error
		handshake, delivery   Histogram
	}
	all := make([]stats, o.Parallel)
	var next atomic.Int64
	cpu := startClusterCPU(&t)
	var wg sync.WaitGroup
	for w := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &all[w]
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= o.Rounds {
					return
				}
				topic := fmt.Sprintf("%s/%d", o.Topic, i)
				readerNode := 1 + i%(len(t.Nodes)-1)
				lost, hs, dl, err := firstMessageRound(ctx, t, tokens, topic, readerNode, uint64(i), o.Timeout, &copts)
				switch {
				case err != nil:
					st.errs++
					if st.firstErr == nil {
						st.firstErr = fmt.Errorf("round %d (%s, reader on %s): %w", i, topic, t.Nodes[readerNode].ID, err)
					}
				case lost:
					st.lost++
					if len(st.lostTopics) < maxLostListed {
						st.lostTopics = append(st.lostTopics, topic+" (reader on "+t.Nodes[readerNode].ID+")")
					}
				default:
					st.delivered++
					st.handshake.Record(hs.Nanoseconds())
					st.delivery.Record(dl.Nanoseconds())
				}
			}
		}()
	}
	wg.Wait()
	res.CPU = cpu.stop()
	res.DurationSec = res.CPU.WallSec
	var hs, dl Histogram
	for i := range all {
		st := &all[i]
		res.Delivered += st.delivered
		res.Lost += st.lost
		res.Errors += st.errs
		for _, lt := range st.lostTopics {
			if len(res.LostTopics) < maxLostListed {
				res.LostTopics = append(res.LostTopics, lt)
			}
		}
		if st.firstErr != nil && res.FirstError == "" {
			res.FirstError = st.firstErr.Error()
		}
		hs.Merge(&st.handshake)
		dl.Merge(&st.delivery)
	}
	res.HandshakeUS, res.DeliveryUS = latencyUS(&hs), latencyUS(&dl)
	if res.Delivered+res.Lost == 0 && res.FirstError != "" {
		return res, errors.New("bench: no round could run: " + res.FirstError)
	}
	return res, ctx.Err()
}

// firstMessageRound runs one round on topic: the writer on the first node,
// the reader on node readerNode. It returns whether the message was lost,
// the reader's handshake time and the message's one-way time.
func firstMessageRound(ctx context.Context, t ClusterTarget, tokens []string, topic string, readerNode int, round uint64,
	timeout time.Duration, copts *client.Options) (lost bool, handshake, delivery time.Duration, err error) {
	octx, cancel := context.WithTimeout(ctx, accessOpTimeout)
	defer cancel()
	wuri, err := accessOn(octx, t.Nodes[0], topic, tokens[0], copts)
	if err != nil {
		return false, 0, 0, fmt.Errorf("writer: %w", err)
	}
	writer, err := client.DialURI(octx, wuri, copts)
	if err != nil {
		return false, 0, 0, fmt.Errorf("writer: %w", err)
	}
	defer writer.CloseNow()

	t0 := time.Now()
	ruri, err := accessOn(octx, t.Nodes[readerNode], topic, tokens[readerNode], copts)
	if err != nil {
		return false, 0, 0, fmt.Errorf("reader: %w", err)
	}
	reader, err := dialLean(octx, ruri, copts.Header, firstMessageSize)
	if err != nil {
		return false, 0, 0, fmt.Errorf("reader: %w", err)
	}
	defer reader.CloseNow()
	handshake = time.Since(t0)

	var msg [firstMessageSize]byte
	binary.LittleEndian.PutUint64(msg[8:], round)
	sent := time.Now()
	binary.LittleEndian.PutUint64(msg[0:], uint64(sent.UnixNano()))
	if err := writer.Write(octx, client.Binary, msg[:]); err != nil {
		return false, handshake, 0, fmt.Errorf("writer: %w", err)
	}
	_ = reader.conn.SetReadDeadline(sent.Add(timeout))
	data, err := reader.ReadMessage()
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return true, handshake, 0, nil
	case err != nil:
		return false, handshake, 0, fmt.Errorf("reader: %w", err)
	case len(data) != firstMessageSize || binary.LittleEndian.Uint64(data[8:]) != round:
		return false, handshake, 0, fmt.Errorf("reader: got %d bytes that are not this round's message", len(data))
	}
	return false, handshake, time.Since(sent), nil
}

// WriteTable writes r as a human-readable table.
func (r *FirstMessageResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("scenario", "first message after connect: %d rounds (%d at once), each on a new topic: writer on %s, reader on %v (round robin); the writer sends once the reader's handshake returned", r.Rounds, r.Parallel, r.WriterNode, r.ReaderNodes)
	row("lost", "%d of %d (no message within %g s)", r.Lost, r.Delivered+r.Lost, r.TimeoutSec)
	for _, lt := range r.LostTopics {
		row("  lost", "%s", lt)
	}
	row("errors", "%d rounds could not run", r.Errors)
	if r.FirstError != "" {
		row("first error", "%s", r.FirstError)
	}
	row("reader handshake µs", "%s", latencyRow(r.HandshakeUS))
	row("first message µs", "%s", latencyRow(r.DeliveryUS))
	r.CPU.writeRows(row)
	return tw.Flush()
}
