package relay

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// maxSpareMessages bounds the capacity of a queue backing array kept for
// reuse after a batch; larger ones are released so a burst does not pin
// memory on an idle connection.
const maxSpareMessages = 4096

// conn is one connection inside the Server.
type conn struct {
	srv         *Server
	tc          Conn
	info        Info
	id          uint64
	connectedAt time.Time
	topic       *topicState // set by register, then read-only
	queueLimit  int         // bound of the send queue in bytes; read-only

	// wake has room for one token: the queue has messages, or the
	// connection is closing. Sent without blocking, to a running writer.
	wake chan struct{}
	// writers counts write-loop goroutines: one while there is something
	// to write or close, none for an idle connection (see kickLocked).
	writers sync.WaitGroup
	// done is closed when the connection starts closing.
	done chan struct{}
	// space has room for one token, sent by the write loop after each
	// batch; senders to a Backpressure connection wait on it. Nil otherwise.
	space chan struct{}
	// closingFlag mirrors closing for lock-free checks on the read path.
	closingFlag atomic.Bool
	pinging     atomic.Bool
	pings       sync.WaitGroup

	mu          sync.Mutex
	q           []Message // guarded by mu; q[qHead:] is queued, oldest first
	qHead       int       // guarded by mu
	spare       []Message // guarded by mu; an empty backing array for the next q
	queued      int       // guarded by mu; bytes in q[qHead:], with MessageOverhead each
	inflight    int       // guarded by mu; bytes of the batch being written
	closing     bool      // guarded by mu
	closeCode   CloseCode // guarded by mu; set once with closing
	closeWhy    CloseReason
	closeText   string
	closeIsDone bool        // guarded by mu; the transport already closed, no close frame to send
	abortTimer  *time.Timer // guarded by mu; aborts a close that takes too long
	writing     bool        // guarded by mu; a write loop is running
	// held: the transport's handshake is not complete (Handshaker), so
	// nothing may be written yet: messages queue, and the write loop
	// starts once Accept has completed it (release). Guarded by mu.
	held      bool
	closeSent bool        // guarded by mu; a write loop performed the transport close
	pingTimer *time.Timer // guarded by mu; fires pingTick every PingInterval

	// Owned by the write loop, used only with Info.Coalesce (coalesce).
	merged   []Message // the batch as written, merged; cleared after each write
	mergeBuf []byte    // backing bytes of merged messages, kept up to maxSpareMergeBytes

	lastActivity atomic.Int64 // unix nanoseconds of the last message in or out

	msgsIn   atomic.Uint64 // written by the read loop
	bytesIn  atomic.Uint64
	msgsOut  atomic.Uint64 // written by the write loop
	bytesOut atomic.Uint64
	drops    [NumDropReasons]atomic.Uint64 // written by senders' read loops
}

func newConn(s *Server, tc Conn, info Info) *conn {
	c := &conn{
		srv:         s,
		tc:          tc,
		info:        info,
		id:          s.nextID.Add(1),
		connectedAt: s.cfg.Now(),
		wake:        make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	if info.Backpressure {
		c.space = make(chan struct{}, 1)
	}
	c.queueLimit = s.cfg.SendQueueBytes
	if info.SystemTopic {
		c.queueLimit = max(c.queueLimit, SystemTopicQueueBytes)
	}
	return c
}

// run serves the connection until it closes. It is called on the
// connection's reading goroutine.
//
// The goroutine spends an idle connection's life parked in readLoop, under
// run's frame: the work before and after the loop is in functions of their
// own so that run's frame stays small and the goroutine's stack fits in its
// first few KiB instead of doubling for the connection's life.
func (c *conn) run(ctx context.Context) CloseReason {
	c.started()
	if !c.info.ExpiresAt.IsZero() {
		t := time.AfterFunc(c.info.ExpiresAt.Sub(c.srv.cfg.Now()), func() {
			c.close(CloseTokenExpired, ReasonTokenExpired, "token expired")
		})
		defer t.Stop()
	}
	stop := context.AfterFunc(ctx, func() {
		c.close(CloseGoingAway, ReasonShutdown, "server shutting down")
	})
	defer stop()

	c.readLoop() // returns once the connection is closing
	return c.finish()
}

// started calls the OnConnect hook and starts the ping timer.
func (c *conn) started() {
	if h := c.srv.cfg.OnConnect; h != nil {
		h(c.status())
	}
	if d := c.pingInterval(); d > 0 {
		c.mu.Lock()
		c.pingTimer = time.AfterFunc(d, c.pingTick)
		c.mu.Unlock()
	}
}

// finish waits for the connection's other goroutines once readLoop has
// returned, unregisters it and reports why it closed.
func (c *conn) finish() CloseReason {
	c.mu.Lock()
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
	c.mu.Unlock()
	c.writers.Wait() // the last one performed the transport close
	c.pings.Wait()
	c.srv.unregister(c)

	c.mu.Lock()
	why, code := c.closeWhy, c.closeCode
	c.mu.Unlock()
	c.srv.closes[why].Add(1)
	if h := c.srv.cfg.OnClose; h != nil {
		h(c.status(), why)
	}
	c.srv.cfg.Logger.Debug("relay: connection closed", "conn", c.id, "topic", c.info.Topic,
		"reason", why.String(), "code", int(code))
	return why
}

func (c *conn) readLoop() {
	maxSize := c.srv.cfg.MaxMessageBytes
	for {
		typ, data, err := c.tc.ReadMessage()
		if err != nil {
			var ce *CloseError
			switch {
			case errors.As(err, &ce) && ce.Code == CloseTooBig:
				c.closeTransportDone(CloseTooBig, ReasonTooBig)
			case errors.As(err, &ce):
				c.closeTransportDone(ce.Code, ReasonPeerClosed)
			default:
				c.closeTransportDone(CloseGoingAway, ReasonReadError)
			}
			return
		}
		if c.closingFlag.Load() {
			return
		}
		switch {
		case len(data) > maxSize:
			c.close(CloseTooBig, ReasonTooBig, "message too big")
			return
		case typ == Text && !utf8.Valid(data):
			c.close(CloseInvalidData, ReasonInvalidUTF8, "text message is not valid UTF-8")
			return
		}
		c.msgsIn.Add(1)
		c.bytesIn.Add(uint64(len(data)))
		c.lastActivity.Store(c.srv.cfg.Now().UnixNano())
		if c.info.SystemTopic {
			c.close(ClosePolicy, ReasonPolicy, "nobody may write to a system topic")
			return
		}
		if !c.info.CanWrite {
			c.drops[DropNotPermitted].Add(1)
			continue
		}
		c.fanOut(Message{Type: typ, Data: data})
	}
}

// fanOut queues m, written by c, for every other local reader of c's topic,
// then offers it once to Peers if another node reads the topic. It is
// called on c's read loop and does not allocate.
func (c *conn) fanOut(m Message) {
	t := c.topic
	for _, r := range *t.readers.Load() {
		if r != c {
			r.enqueue(m, c.done)
		}
	}
	if t.remote.Load() {
		c.srv.peers.Forward(t.name, m)
	}
}

// enqueue queues m for writing to c. It is called from senders' read loops
// and must not allocate in the steady state. It never blocks, except for a
// Backpressure connection whose queue is full or over the node's budget:
// then it waits for room, for c to close, or for senderDone (the sender
// closing; nil for the server).
func (c *conn) enqueue(m Message, senderDone <-chan struct{}) {
	size := len(m.Data) + MessageOverhead
	limit := c.queueLimit
	c.mu.Lock()
	// A Backpressure connection with nothing queued takes the message
	// whatever the budget says: nothing of its own would ever make room.
	for c.space != nil && !c.closing && c.queued+c.inflight > 0 &&
		(c.queued+c.inflight+size > limit || !c.srv.budgetAdmits(c.queued+c.inflight, size)) {
		c.mu.Unlock()
		select {
		case <-c.space:
		case <-c.done:
		case <-senderDone: // the sender is going away; so is its message
			c.drops[DropSenderClosed].Add(1)
			return
		}
		c.mu.Lock()
	}
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.queued+c.inflight+size > limit {
		if c.srv.cfg.SlowConsumer == PolicyClose {
			c.mu.Unlock()
			c.close(CloseSlowConsumer, ReasonSlowConsumer, "slow consumer: send queue full")
			return
		}
		if c.inflight+size > limit {
			// Even an empty queue could not take it: keep the queue.
			c.mu.Unlock()
			c.drops[DropQueueTail].Add(1)
			return
		}
		for c.queued+c.inflight+size > limit {
			if !c.dropOldestLocked(DropQueueHead) {
				break
			}
		}
		if c.queued+c.inflight+size > limit {
			c.mu.Unlock()
			c.drops[DropQueueTail].Add(1)
			return
		}
	}
	switch {
	case c.space != nil:
		// Back-pressure has waited above for as long as waiting could help.
		c.srv.queuedBytes.Add(int64(size))
	case !c.srv.reserveQueued(c.queued+c.inflight, size):
		if c.srv.cfg.SlowConsumer == PolicyClose {
			c.mu.Unlock()
			c.close(CloseSlowConsumer, ReasonQueueBudget, "slow consumer: node queue budget reached")
			return
		}
		// Make room from this connection's own oldest messages, no more
		// than needed; the batch being written cannot be taken back.
		for {
			if !c.dropOldestLocked(DropQueueBudget) {
				c.mu.Unlock()
				c.drops[DropQueueBudget].Add(1)
				return
			}
			if c.srv.reserveQueued(c.queued+c.inflight, size) {
				break
			}
		}
	}
	c.appendLocked(m, size)
	c.mu.Unlock()
}

// dropOldestLocked drops the oldest queued message, counting it under why,
// and reports whether there was one. c.mu must be held.
func (c *conn) dropOldestLocked(why DropReason) bool {
	if c.qHead == len(c.q) {
		return false
	}
	n := len(c.q[c.qHead].Data) + MessageOverhead
	c.queued -= n
	c.srv.releaseQueued(n)
	c.q[c.qHead] = Message{}
	c.qHead++
	c.drops[why].Add(1)
	return true
}

// appendLocked queues m, whose size is already counted in the node's total,
// and makes sure a write loop will send it. c.mu must be held.
func (c *conn) appendLocked(m Message, size int) {
	if c.qHead > 0 && len(c.q) == cap(c.q) && c.qHead >= len(c.q)/2 {
		// Reclaim the dropped prefix instead of growing the array, once it
		// is at least half of it: a full queue drops one message per
		// enqueue, and compacting each time would copy the whole queue per
		// message (quadratic; it stalled 1 → 1,000 fan-out). Below half,
		// append grows the array once; after that each compaction is paid
		// for by as many enqueues as it copies.
		n := copy(c.q, c.q[c.qHead:])
		clear(c.q[n:])
		c.q = c.q[:n]
		c.qHead = 0
	}
	c.q = append(c.q, m)
	c.queued += size
	c.kickLocked()
}

// writerLinger is how long an idle write loop waits for more before it
// exits: long enough to carry a steady stream without a goroutine start per
// message, short enough that an idle connection holds no writer.
const writerLinger = time.Second

// kickLocked makes sure a write loop will look at the queue and the closing
// state: it wakes the running one or starts one. c.mu must be held.
func (c *conn) kickLocked() {
	if c.held {
		return // release kicks
	}
	if c.writing {
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return
	}
	c.writing = true
	c.writers.Add(1)
	go c.writeLoop()
}

// release lets the write loop run once the transport's handshake is
// complete, and starts it if messages queued or a close came meanwhile.
func (c *conn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.held {
		return
	}
	c.held = false
	if c.queued > 0 || c.closing {
		c.kickLocked()
	}
}

// writeLoop writes queued messages in batches; once the connection is
// closing it performs the transport close. It exits after writerLinger with
// nothing to do, so that an idle connection has no writer goroutine.
func (c *conn) writeLoop() {
	defer c.writers.Done()
	var linger *time.Timer
	for {
		c.mu.Lock()
		if c.closing {
			c.writing = false
			if c.closeSent {
				c.mu.Unlock()
				return
			}
			c.closeSent = true
			code, text, transportDone := c.closeCode, c.closeText, c.closeIsDone
			c.mu.Unlock()
			if transportDone {
				c.tc.Abort()
			} else {
				_ = c.tc.Close(code, text)
			}
			c.mu.Lock()
			if c.abortTimer != nil {
				c.abortTimer.Stop()
			}
			c.mu.Unlock()
			return
		}
		if c.qHead == len(c.q) {
			c.mu.Unlock()
			if linger == nil {
				linger = time.NewTimer(writerLinger)
			} else {
				linger.Reset(writerLinger)
			}
			select {
			case <-c.wake:
				linger.Stop()
				continue
			case <-linger.C:
			}
			c.mu.Lock()
			if c.qHead == len(c.q) && !c.closing {
				c.writing = false
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			continue
		}
		backing := c.q
		batch := backing[c.qHead:]
		c.q, c.spare = c.spare, nil
		c.qHead = 0
		c.inflight, c.queued = c.queued, 0
		c.mu.Unlock()

		frames := batch
		if c.info.Coalesce && len(batch) > 1 {
			frames = c.coalesce(batch)
		}
		err := c.tc.WriteMessages(frames, time.Now().Add(c.srv.cfg.WriteTimeout))
		if c.info.Coalesce {
			clear(c.merged) // WriteMessages has let go of it
		}
		var n uint64
		for i := range batch {
			n += uint64(len(batch[i].Data))
		}
		count := uint64(len(batch))
		clear(backing)

		c.mu.Lock()
		c.srv.releaseQueued(c.inflight)
		c.inflight = 0
		if cap(backing) <= maxSpareMessages {
			c.spare = backing[:0]
		}
		c.mu.Unlock()
		select {
		case c.space <- struct{}{}: // a nil channel (no back-pressure) is never ready
		default:
		}
		if err != nil {
			c.closeTransportDone(CloseGoingAway, ReasonWriteError)
			c.mu.Lock()
			c.closeSent, c.writing = true, false
			c.mu.Unlock()
			c.tc.Abort()
			return
		}
		c.msgsOut.Add(count)
		c.bytesOut.Add(n)
		c.lastActivity.Store(c.srv.cfg.Now().UnixNano())
	}
}

// maxSpareMergeBytes bounds the merge buffer a coalescing connection keeps
// between batches; a larger one is released after its batch.
const maxSpareMergeBytes = 64 << 10

// coalesce returns batch with each run of consecutive messages of one type
// merged into one message, their data concatenated in order without
// delimiter, as practable/relay's writer merges what is queued behind the
// message it writes (practable merges regardless of type; a text frame
// holding binary data could be invalid UTF-8, so runs split at a change of
// type). It counts each merged message and what went into it. It runs on
// the write loop, which owns c.merged and c.mergeBuf; WriteMessages does not
// retain them, so they are reused for the next batch.
func (c *conn) coalesce(batch []Message) []Message {
	total := 0
	for i := range batch {
		total += len(batch[i].Data)
	}
	buf := c.mergeBuf[:0]
	if cap(buf) < total {
		buf = make([]byte, 0, total) // never grows below: no merged message moves
	}
	out := c.merged[:0]
	var frames, msgs uint64
	for i := 0; i < len(batch); {
		j := i + 1
		for j < len(batch) && batch[j].Type == batch[i].Type {
			j++
		}
		if j-i == 1 {
			out = append(out, batch[i])
		} else {
			start := len(buf)
			for k := i; k < j; k++ {
				buf = append(buf, batch[k].Data...)
			}
			out = append(out, Message{Type: batch[i].Type, Data: buf[start:len(buf):len(buf)]})
			frames++
			msgs += uint64(j - i)
		}
		i = j
	}
	if cap(buf) <= maxSpareMergeBytes {
		c.mergeBuf = buf[:0]
	} else {
		c.mergeBuf = nil
	}
	c.merged = out
	if frames > 0 {
		c.srv.coalescedFrames.Add(frames)
		c.srv.coalescedMessages.Add(msgs)
	}
	return out
}

// pingInterval is how often c is pinged: Info.PingInterval if set, else
// the server's (not positive: never).
func (c *conn) pingInterval() time.Duration {
	if d := c.info.PingInterval; d != 0 {
		return d
	}
	return c.srv.cfg.PingInterval
}

// pingTick runs every pingInterval on a timer (no goroutine of its own).
func (c *conn) pingTick() {
	c.startPing()
	c.mu.Lock()
	if !c.closing {
		c.pingTimer.Reset(c.pingInterval())
	}
	c.mu.Unlock()
}

func (c *conn) startPing() {
	if !c.pinging.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	if c.closing { // run may be waiting for the pings already
		c.mu.Unlock()
		c.pinging.Store(false)
		return
	}
	c.pings.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.pings.Done()
		defer c.pinging.Store(false)
		err := c.tc.Ping(time.Now().Add(c.srv.cfg.PongTimeout))
		if err != nil && !c.closingFlag.Load() {
			c.close(CloseGoingAway, ReasonPingTimeout, "ping timeout")
			c.tc.Abort()
		}
	}()
}

// close asks for the connection to be closed with code. It never blocks on
// the network: the write loop sends the close frame. Only the first call
// counts.
func (c *conn) close(code CloseCode, why CloseReason, text string) {
	c.setClosing(code, why, text, false)
}

// closeTransportDone records that the transport has already closed (the
// peer closed, or the transport failed), so no close frame is sent.
func (c *conn) closeTransportDone(code CloseCode, why CloseReason) {
	c.setClosing(code, why, "", true)
}

func (c *conn) setClosing(code CloseCode, why CloseReason, text string, transportDone bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.closingFlag.Store(true)
	close(c.done)
	c.closeCode, c.closeWhy, c.closeText, c.closeIsDone = code, why, text, transportDone
	clear(c.q)
	c.srv.releaseQueued(c.queued)
	c.q, c.qHead, c.queued, c.spare = nil, 0, 0, nil
	if !transportDone {
		// The write loop may be blocked writing to a stalled peer; give it
		// CloseTimeout to send the close frame, then abort.
		c.abortTimer = time.AfterFunc(c.srv.cfg.CloseTimeout, c.tc.Abort)
	}
	c.kickLocked()
	c.mu.Unlock()
}

func (c *conn) status() ConnStatus {
	c.mu.Lock()
	queued := c.queued + c.inflight
	c.mu.Unlock()
	var drops uint64
	var byReason [NumDropReasons]uint64
	for i := range c.drops {
		byReason[i] = c.drops[i].Load()
		drops += byReason[i]
	}
	last := c.connectedAt
	if ns := c.lastActivity.Load(); ns != 0 {
		last = time.Unix(0, ns)
	}
	return ConnStatus{
		ID:            c.id,
		Info:          c.info,
		ConnectedAt:   c.connectedAt,
		MessagesIn:    c.msgsIn.Load(),
		BytesIn:       c.bytesIn.Load(),
		MessagesOut:   c.msgsOut.Load(),
		BytesOut:      c.bytesOut.Load(),
		Drops:         drops,
		DropsByReason: byReason,
		QueuedBytes:   queued,
		LastActivity:  last,
	}
}
