package agent

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
)

// tcpStream bridges one local TCP connection to a topic. The relay link and
// the local connection are kept up independently: bytes read locally wait
// (the service is slowed by TCP) while the link is down; messages from the
// relay while the local side is down are dropped and counted.
type tcpStream struct {
	link  *link
	addr  string
	chunk int
	relay *relaySlot
	local localSlot
}

func newTCPStream(a *Agent, sc *StreamConfig) *tcpStream {
	return &tcpStream{
		link:  a.newLink(sc.Name, sc.Name, sc.Kind, client.DefaultPrefix, sc.Topic, sc.TokenFile, "conn"),
		addr:  sc.Addr,
		chunk: sc.Chunk,
		relay: newRelaySlot(),
	}
}

func (t *tcpStream) prepare() error { return nil }

func (t *tcpStream) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { t.link.run(ctx, t.fromRelay) })
	wg.Go(func() { t.runLocal(ctx) })
	wg.Wait()
}

// fromRelay writes the relay's messages to the local connection.
func (t *tcpStream) fromRelay(ctx context.Context, c *client.Conn) error {
	t.relay.set(c)
	defer t.relay.clear(c)
	return readRelay(ctx, c, t.link.st, func(_ client.MessageType, data []byte) {
		if !t.local.write(data) {
			t.link.st.drops.Add(1)
		}
	})
}

// readRelay reads messages from c until it fails, counting them and passing
// each to deliver (which must not keep data).
func readRelay(ctx context.Context, c *client.Conn, st *linkStats, deliver func(typ client.MessageType, data []byte)) error {
	var buf []byte
	for {
		typ, data, err := c.ReadInto(ctx, buf)
		if err != nil {
			return err
		}
		buf = data
		st.received(len(data))
		deliver(typ, data)
		if cap(buf) > 4<<20 {
			buf = nil // do not keep one huge message's buffer
		}
	}
}

// runLocal keeps the local connection up and sends what it reads.
func (t *tcpStream) runLocal(ctx context.Context) {
	st := t.link.st
	log := t.link.log
	bo := &backoff{p: t.link.a.backoff}
	d := keepAliveDialer()
	buf := make([]byte, t.chunk)
	for ctx.Err() == nil {
		st.localAttempts.Add(1)
		conn, err := d.DialContext(ctx, "tcp", t.addr)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			st.localDown(err)
			wait := bo.next()
			log.Warn("local service unreachable", "addr", t.addr, "error", err, "retry_in", wait)
			if !t.link.a.sleep(ctx, wait) {
				return
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		t.local.set(conn)
		st.localUpNow()
		log.Info("local service connected", "addr", t.addr)
		start := time.Now()
		err = pump(ctx, conn, buf, t.relay, st)
		t.local.clear(conn)
		conn.Close()
		stop()
		if ctx.Err() != nil {
			st.localDown(nil)
			return
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the service closed: worth showing
		}
		st.localDown(err)
		bo.done(time.Since(start))
		wait := bo.next()
		log.Warn("local connection ended", "addr", t.addr, "error", err, "retry_in", wait)
		if !t.link.a.sleep(ctx, wait) {
			return
		}
	}
}

// pump reads r in chunks of up to len(buf) and sends each as one binary
// message, waiting while the link is down. It returns r's error (io.EOF at
// its end) or ctx's.
func pump(ctx context.Context, r io.Reader, buf []byte, relay *relaySlot, st *linkStats) error {
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := relay.send(ctx, client.Binary, buf[:n]); serr != nil {
				return serr
			}
			st.sent(n)
		}
		if err != nil {
			return err
		}
	}
}

// localSlot holds the writer of a stream's current local side (a TCP
// connection, a process's stdin). Only the relay reader writes to it.
type localSlot struct {
	mu sync.Mutex
	w  io.WriteCloser // nil while the local side is down
}

func (s *localSlot) set(w io.WriteCloser) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

func (s *localSlot) clear(w io.WriteCloser) {
	s.mu.Lock()
	if s.w == w {
		s.w = nil
	}
	s.mu.Unlock()
}

// write writes p to the current local side and reports whether it could; a
// failed writer is closed (its owner notices and reconnects).
func (s *localSlot) write(p []byte) bool {
	s.mu.Lock()
	w := s.w
	s.mu.Unlock()
	if w == nil {
		return false
	}
	if _, err := w.Write(p); err != nil {
		s.clear(w)
		w.Close()
		return false
	}
	return true
}
