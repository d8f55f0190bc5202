package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Defaults of PublishOptions.
const (
	DefaultPublishTopic    = "bench/publish"
	DefaultPublishSize     = 256
	DefaultPublishDuration = 5 * time.Second
	// settleTimeout bounds the wait, between phases, for the readers to
	// receive what was queued for them in the phase before.
	settleTimeout = 5 * time.Second
	// settleQuiet is how long the readers must receive nothing to be
	// taken as settled.
	settleQuiet = 200 * time.Millisecond
)

// PublishOptions configure Publish. Zero values mean the defaults.
type PublishOptions struct {
	// URL is the relay's base URL (loopback only), Secret its token secret
	// (HS256: tokens are minted). Required.
	URL    string
	Secret []byte
	// ServerPID, if positive, is the relay's process id: its CPU time in
	// each phase's window is reported, per message and per delivery.
	ServerPID int
	// Topic is the topic used (default bench/publish).
	Topic string
	// Readers is the number of readers (default 100), websocket readers in
	// every phase but the last, which has as many event-stream readers.
	Readers int
	// Size is the message size in bytes (default 256), ASCII text.
	Size int
	// Clients and Batches are the HTTP publish phases: one per pair
	// (default 1 and 16 clients, batches of 1 and 100).
	Clients, Batches []int
	// Rate, if positive, paces every phase to this many messages per
	// second in total (spread over the clients); 0: unpaced.
	Rate float64
	// Duration is each phase's measured window (default 5 s), Warmup the
	// unmeasured time before it (default 1 s; negative: none).
	Duration, Warmup time.Duration
}

// PublishPhase is one measured phase of Publish.
type PublishPhase struct {
	// Name says what published and what read.
	Name string `json:"name"`
	// Publisher is "websocket" (one writer) or "http"; Readers
	// "websocket" or "sse".
	Publisher string `json:"publisher"`
	Readers   string `json:"readers"`
	// Clients and Batch: HTTP publish clients (keep-alive) and messages
	// per request.
	Clients int `json:"clients"`
	Batch   int `json:"batch"`
	// Published counts the messages published in the window (accepted
	// requests' items); Delivered those the readers received in it.
	Published       uint64  `json:"published"`
	Delivered       uint64  `json:"delivered"`
	Seconds         float64 `json:"seconds"`
	PublishedPerSec float64 `json:"published_per_sec"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	// DeliveredPct is Delivered over Published × readers (below 100: the
	// readers' queues dropped, or they were still behind).
	DeliveredPct float64 `json:"delivered_pct"`
	// Errors counts failed publish requests in the window; FirstError is
	// the phase's first (warm-up included).
	Errors     uint64 `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// ServerCPUSec and the CPU per published message and per delivery, in
	// µs (nil without ServerPID).
	ServerCPUSec       *float64 `json:"server_cpu_sec,omitempty"`
	CPUPerMessageUS    *float64 `json:"server_cpu_per_message_us,omitempty"`
	CPUPerDeliveryUS   *float64 `json:"server_cpu_per_delivery_us,omitempty"`
	CPUPerMessageRatio *float64 `json:"cpu_per_message_vs_websocket_writer,omitempty"`
}

// PublishResult is what Publish measured.
type PublishResult struct {
	URL      string         `json:"url"`
	Topic    string         `json:"topic"`
	Readers  int            `json:"readers"`
	Size     int            `json:"size"`
	Rate     float64        `json:"rate"`
	Duration float64        `json:"duration_sec"`
	Phases   []PublishPhase `json:"phases"`
}

func (o *PublishOptions) withDefaults() (PublishOptions, error) {
	c := *o
	if c.Topic == "" {
		c.Topic = DefaultPublishTopic
	}
	if c.Readers == 0 {
		c.Readers = DefaultReaders
	}
	if c.Size == 0 {
		c.Size = DefaultPublishSize
	}
	if len(c.Clients) == 0 {
		c.Clients = []int{1, 16}
	}
	if len(c.Batches) == 0 {
		c.Batches = []int{1, wire.MaxPublishBatch}
	}
	if c.Duration == 0 {
		c.Duration = DefaultPublishDuration
	}
	if c.Warmup == 0 {
		c.Warmup = DefaultWarmup
	} else if c.Warmup < 0 {
		c.Warmup = 0
	}
	switch {
	case len(c.Secret) == 0:
		return c, errors.New("bench: publish: the relay's secret is needed")
	case c.Readers < 1 || c.Size < 1 || c.Duration < 0 || c.Rate < 0:
		return c, errors.New("bench: publish: readers and size must be positive, duration and rate not negative")
	}
	for _, n := range c.Clients {
		if n < 1 {
			return c, fmt.Errorf("bench: publish: %d clients: want at least 1", n)
		}
	}
	for _, b := range c.Batches {
		if b < 1 || b > wire.MaxPublishBatch {
			return c, fmt.Errorf("bench: publish: batch %d: want 1 to %d", b, wire.MaxPublishBatch)
		}
	}
	return c, CheckLoopbackURL(c.URL)
}

// Publish measures HTTP publish against a websocket writer, and event-stream
// readers against websocket readers, on one relay in one run:
//
//  1. a websocket writer to a topic with Readers websocket readers (the
//     reference);
//  2. HTTP publish to the same topic and readers, for every pair of Clients
//     (keep-alive connections, each sending its next request when the last
//     is answered) and Batches (messages per request);
//  3. the websocket writer again, to Readers event-stream (SSE) readers.
//
// Each phase reports messages published and delivered per second and, with
// ServerPID, the relay's CPU time per published message and per delivery.
// Between phases the readers are given time to receive what is queued.
func Publish(ctx context.Context, opts PublishOptions) (PublishResult, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return PublishResult{}, err
	}
	res := PublishResult{URL: o.URL, Topic: o.Topic, Readers: o.Readers, Size: o.Size, Rate: o.Rate, Duration: o.Duration.Seconds()}
	// Readers may only read and publishers only write: the websocket
	// writer is then no reader of the HTTP phases.
	tokenFor := func(scope string) (string, error) {
		return mintToken(o.Secret, o.URL, time.Hour, func(c *auth.Claims) {
			c.Topic, c.Prefix, c.Scopes = o.Topic, client.DefaultPrefix, []string{scope}
		})
	}
	readTok, err := tokenFor(auth.ScopeRead)
	if err != nil {
		return res, err
	}
	writeTok, err := tokenFor(auth.ScopeWrite)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	payload := bytes.Repeat([]byte("x"), o.Size)
	b := &publishBench{o: o, readTok: readTok, writeTok: writeTok, payload: payload}

	wsReaders, err := b.startWSReaders(ctx)
	if err != nil {
		return res, err
	}
	writer, err := client.Dial(ctx, o.URL, o.Topic, writeTok, nil)
	if err != nil {
		wsReaders.close()
		return res, fmt.Errorf("bench: publish: dial the writer: %w", err)
	}
	defer writer.CloseNow()
	go func() { // answer pings
		for {
			if _, _, err := writer.Read(context.Background()); err != nil {
				return
			}
		}
	}()

	ref, err := b.phase(ctx, wsReaders, "websocket writer → websocket readers", "websocket", "websocket", 1, 1, b.wsWriter(writer))
	if err != nil {
		wsReaders.close()
		return res, err
	}
	res.Phases = append(res.Phases, ref)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 1024, DisableCompression: true}}
	defer hc.CloseIdleConnections()
	for _, clients := range o.Clients {
		for _, batch := range o.Batches {
			name := fmt.Sprintf("HTTP publish, %d client%s, batch %d → websocket readers", clients, plural(clients), batch)
			p, err := b.phase(ctx, wsReaders, name, "http", "websocket", clients, batch, b.httpPublisher(hc, clients, batch))
			if err != nil {
				wsReaders.close()
				return res, err
			}
			res.Phases = append(res.Phases, p)
		}
	}
	wsReaders.close()

	sseReaders, err := b.startSSEReaders(ctx)
	if err != nil {
		return res, err
	}
	defer sseReaders.close()
	p, err := b.phase(ctx, sseReaders, "websocket writer → SSE readers", "websocket", "sse", 1, 1, b.wsWriter(writer))
	if err != nil {
		return res, err
	}
	res.Phases = append(res.Phases, p)
	for i := range res.Phases {
		res.Phases[i].compareTo(ref)
	}
	return res, nil
}

// publishBench is one run of Publish.
type publishBench struct {
	o                 PublishOptions
	readTok, writeTok string
	payload           []byte
}

// readerSet is the readers of a phase: each counts what it received.
type readerSet struct {
	counts []atomic.Uint64
	stop   func()
	wg     sync.WaitGroup
	failed atomic.Pointer[error]
}

func (rs *readerSet) total() uint64 {
	var n uint64
	for i := range rs.counts {
		n += rs.counts[i].Load()
	}
	return n
}

func (rs *readerSet) close() {
	rs.stop()
	rs.wg.Wait()
}

func (rs *readerSet) fail(err error) { rs.failed.CompareAndSwap(nil, &err) }

// settle waits until the readers have received nothing for settleQuiet
// (bounded by settleTimeout), so that a phase does not count the one
// before.
func (rs *readerSet) settle(ctx context.Context) {
	deadline := time.Now().Add(settleTimeout)
	last, quietSince := rs.total(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if n := rs.total(); n != last {
			last, quietSince = n, time.Now()
		} else if time.Since(quietSince) >= settleQuiet {
			return
		}
	}
}

// startWSReaders connects o.Readers lean websocket readers.
func (b *publishBench) startWSReaders(ctx context.Context) (*readerSet, error) {
	rs := &readerSet{counts: make([]atomic.Uint64, b.o.Readers)}
	conns, err := dialAll(ctx, dialParallel, b.o.Readers, "reader", func(ctx context.Context, i int) (msgConn, error) {
		uri, err := client.Access(ctx, b.o.URL, b.o.Topic, b.readTok, nil)
		if err != nil {
			return nil, err
		}
		return dialLean(ctx, uri, nil, b.o.Size)
	})
	if err != nil {
		closeAll(conns)
		return nil, err
	}
	rs.stop = func() { closeAll(conns) }
	for i, c := range conns {
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			for {
				if _, err := c.ReadMessage(); err != nil {
					return
				}
				rs.counts[i].Add(1)
			}
		}()
	}
	return rs, nil
}

// startSSEReaders connects o.Readers event-stream readers: the code
// exchange answered as text/event-stream.
func (b *publishBench) startSSEReaders(ctx context.Context) (*readerSet, error) {
	rs := &readerSet{counts: make([]atomic.Uint64, b.o.Readers)}
	rctx, cancel := context.WithCancel(ctx)
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, DisableCompression: true}}
	rs.stop = func() { cancel(); hc.CloseIdleConnections() }
	bodies := make([]io.ReadCloser, b.o.Readers)
	for i := range bodies {
		uri, err := client.Access(ctx, b.o.URL, b.o.Topic, b.readTok, nil)
		if err == nil {
			bodies[i], err = openEventStream(rctx, hc, uri)
		}
		if err != nil {
			for _, body := range bodies[:i] {
				body.Close()
			}
			cancel()
			return nil, fmt.Errorf("bench: publish: SSE reader %d: %w", i, err)
		}
	}
	for i, body := range bodies {
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			defer body.Close()
			if err := countEvents(body, b.o.Size, &rs.counts[i]); err != nil && rctx.Err() == nil {
				rs.fail(err)
			}
		}()
	}
	return rs, nil
}

// openEventStream turns a websocket URI from the access endpoint into the
// event-stream request of the same code, and returns the stream's body.
func openEventStream(ctx context.Context, hc *http.Client, uri string) (io.ReadCloser, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "ws", "http", 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, errors.New("event stream request failed")
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("event stream: status %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp.Body, nil
}

// countEvents reads an event stream, adding one to n per message event
// (data lines ended by a blank line); comments (": ping") are skipped, and
// a close event ends the stream.
func countEvents(r io.Reader, size int, n *atomic.Uint64) error {
	br := bufio.NewReaderSize(r, max(4096, 2*size+64))
	inEvent, closing := false, false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				inEvent = true // a data line longer than the buffer: read on
				continue
			}
			return err
		}
		switch {
		case len(line) == 1: // "\n": the end of an event
			if inEvent && !closing {
				n.Add(1)
			}
			if closing {
				return nil
			}
			inEvent = false
		case bytes.HasPrefix(line, []byte("data:")):
			inEvent = true
		case bytes.HasPrefix(line, []byte("event: close")):
			closing = true
		}
	}
}

// publisher publishes until ctx ends, adding each published message to
// sent and reporting each failed request to failed.
type publisher func(ctx context.Context, sent *atomic.Uint64, failed *failures)

// failures counts a publisher's failed requests and keeps the first error.
type failures struct {
	n     atomic.Uint64
	first atomic.Pointer[string]
}

func (f *failures) add(err error) {
	f.n.Add(1)
	msg := err.Error()
	f.first.CompareAndSwap(nil, &msg)
}

// wsWriter publishes o.payload as text messages on w.
func (b *publishBench) wsWriter(w *client.Conn) publisher {
	return func(ctx context.Context, sent *atomic.Uint64, failed *failures) {
		pace := newPacer(b.o.Rate, 1)
		for ctx.Err() == nil {
			// Not ctx: a write whose context ends closes the connection,
			// and the writer serves the next phases too.
			if err := w.Write(context.Background(), client.Text, b.payload); err != nil {
				if ctx.Err() == nil {
					failed.add(fmt.Errorf("websocket write: %w", err))
				}
				return
			}
			sent.Add(1)
			pace.wait(ctx)
		}
	}
}

// httpPublisher publishes with clients keep-alive HTTP clients, batch
// messages per request (a text/plain body for one, a JSON array for more).
func (b *publishBench) httpPublisher(hc *http.Client, clients, batch int) publisher {
	contentType, query, body := "text/plain", "?topic="+url.QueryEscape(b.o.Topic), b.payload
	if batch > 1 {
		var buf bytes.Buffer
		buf.WriteByte('[')
		for i := range batch {
			if i > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, `{"topic":%q,"data":%q}`, b.o.Topic, b.payload)
		}
		buf.WriteByte(']')
		contentType, query, body = "application/json", "", buf.Bytes()
	}
	endpoint := strings.TrimSuffix(b.o.URL, "/") + wire.PublishPath + query
	return func(ctx context.Context, sent *atomic.Uint64, failed *failures) {
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pace := newPacer(b.o.Rate/float64(clients), batch)
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+b.writeTok)
					req.Header.Set("Content-Type", contentType)
					resp, err := hc.Do(req)
					if err != nil {
						if ctx.Err() == nil {
							failed.add(err)
						}
						continue
					}
					answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						failed.add(fmt.Errorf("publish: %d %s", resp.StatusCode, bytes.TrimSpace(answer)))
						continue
					}
					sent.Add(uint64(batch))
					pace.wait(ctx)
				}
			}()
		}
		wg.Wait()
	}
}

// pacer spaces a publisher's requests of n messages each to rate messages
// per second (no pacing at rate 0).
type pacer struct {
	every time.Duration
	next  time.Time
}

func newPacer(rate float64, n int) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	return &pacer{every: time.Duration(float64(n) / rate * float64(time.Second)), next: time.Now()}
}

func (p *pacer) wait(ctx context.Context) {
	if p.every == 0 {
		return
	}
	p.next = p.next.Add(p.every)
	if d := time.Until(p.next); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// phase runs pub for the warm-up and the window, and measures the window.
func (b *publishBench) phase(ctx context.Context, rs *readerSet, name, pubKind, readKind string, clients, batch int, pub publisher) (PublishPhase, error) {
	p := PublishPhase{Name: name, Publisher: pubKind, Readers: readKind, Clients: clients, Batch: batch}
	rs.settle(ctx)
	pctx, stop := context.WithCancel(ctx)
	var sent atomic.Uint64
	var failed failures
	done := make(chan struct{})
	go func() { defer close(done); pub(pctx, &sent, &failed) }()
	defer func() { stop(); <-done }()
	select {
	case <-time.After(b.o.Warmup):
	case <-ctx.Done():
		return p, ctx.Err()
	}
	sent0, failed0, got0, start := sent.Load(), failed.n.Load(), rs.total(), time.Now()
	cpu0, cpuErr := b.serverCPU()
	select {
	case <-time.After(b.o.Duration):
	case <-ctx.Done():
		return p, ctx.Err()
	}
	p.Published, p.Errors, p.Delivered = sent.Load()-sent0, failed.n.Load()-failed0, rs.total()-got0
	p.Seconds = time.Since(start).Seconds()
	cpu1, cpuErr1 := b.serverCPU()
	stop()
	<-done
	if e := rs.failed.Load(); e != nil {
		return p, fmt.Errorf("bench: publish: %s: a reader failed: %w", name, *e)
	}
	if first := failed.first.Load(); first != nil {
		p.FirstError = *first
	}
	p.PublishedPerSec = float64(p.Published) / p.Seconds
	p.DeliveredPerSec = float64(p.Delivered) / p.Seconds
	if p.Published > 0 {
		p.DeliveredPct = 100 * float64(p.Delivered) / float64(p.Published*uint64(b.o.Readers))
	}
	if cpuErr == nil && cpuErr1 == nil && b.o.ServerPID > 0 {
		sec := (cpu1 - cpu0).Seconds()
		p.ServerCPUSec = &sec
		if p.Published > 0 {
			v := 1e6 * sec / float64(p.Published)
			p.CPUPerMessageUS = &v
		}
		if p.Delivered > 0 {
			v := 1e6 * sec / float64(p.Delivered)
			p.CPUPerDeliveryUS = &v
		}
	}
	return p, nil
}

func (b *publishBench) serverCPU() (time.Duration, error) {
	if b.o.ServerPID <= 0 {
		return 0, errors.New("no server pid")
	}
	return ProcCPU(b.o.ServerPID)
}

// compareTo sets p's CPU per published message relative to ref's (the
// websocket writer to websocket readers).
func (p *PublishPhase) compareTo(ref PublishPhase) {
	if p.CPUPerMessageUS != nil && ref.CPUPerMessageUS != nil && *ref.CPUPerMessageUS > 0 {
		v := *p.CPUPerMessageUS / *ref.CPUPerMessageUS
		p.CPUPerMessageRatio = &v
	}
}

// WriteTable writes r as a human-readable table.
func (r *PublishResult) WriteTable(w io.Writer) error {
	rate := "unpaced"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%g msg/s in total", r.Rate)
	}
	fmt.Fprintf(w, "publish: topic %s, %d readers, %d B text messages, %s, %.0f s per phase, relay %s\n\n", r.Topic, r.Readers, r.Size, rate, r.Duration, r.URL)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tpublished msg/s\tdelivered/s\tdelivered %\terrors\tserver CPU s\tCPU µs/msg\tCPU µs/delivery\t× ws writer CPU/msg\t")
	opt := func(v *float64, format string) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf(format, *v)
	}
	for _, p := range r.Phases {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.1f\t%d\t%s\t%s\t%s\t%s\t\n", p.Name, p.PublishedPerSec, p.DeliveredPerSec, p.DeliveredPct, p.Errors,
			opt(p.ServerCPUSec, "%.2f"), opt(p.CPUPerMessageUS, "%.1f"), opt(p.CPUPerDeliveryUS, "%.3f"), opt(p.CPUPerMessageRatio, "%.2f"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range r.Phases {
		if p.FirstError != "" {
			fmt.Fprintf(w, "%s: first error: %s\n", p.Name, p.FirstError)
		}
	}
	return nil
}
