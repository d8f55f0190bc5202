package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Bounds of the local websockets of an http-push stream.
const (
	// localQueue is how many messages from the relay wait for one local
	// websocket; beyond, the newest are dropped and counted.
	localQueue = 256
	// localWriteTimeout bounds one write to a local websocket.
	localWriteTimeout = 10 * time.Second
	// maxLocalMessage is the largest message taken whole from a local
	// websocket (the relay's default --max-message); larger ones are
	// split, never dropped.
	maxLocalMessage = 1 << 20
	// localReadLimit bounds a message from a local websocket.
	localReadLimit = 64 << 20
)

// pushStream is an http-push stream: a local HTTP listener whose feeds each
// have their own link. Pushed bodies are live data: while a feed's link is
// down their chunks are dropped (and counted), not held; while it is up a
// slow relay slows the pusher.
type pushStream struct {
	a      *Agent
	name   string
	listen string
	chunk  int
	feeds  map[string]*feed
	order  []*feed
	log    *slog.Logger

	ln  net.Listener    // set by prepare
	ctx context.Context // the stream's context, set by run before serving

	hmu      sync.Mutex // guards closing and handlers' Add
	closing  bool
	handlers sync.WaitGroup
}

// feed is one feed of an http-push stream.
type feed struct {
	name  string
	link  *link
	relay *relaySlot

	mu         sync.Mutex            // guards the fields below
	pushSeq    uint64                // id of the latest push
	cancelPush func()                // interrupts the active push
	locals     map[*localWS]struct{} // connected local websockets
}

// localWS is one local websocket of a feed; q holds messages from the relay.
type localWS struct {
	q chan wsMsg
}

type wsMsg struct {
	typ  client.MessageType
	data []byte
}

func newPushStream(a *Agent, sc *StreamConfig) *pushStream {
	p := &pushStream{a: a, name: sc.Name, listen: sc.Listen, chunk: sc.Chunk, feeds: map[string]*feed{},
		log: a.log.With("stream", sc.Name)}
	for _, fc := range sc.Feeds {
		tok := fc.TokenFile
		if tok == "" {
			tok = sc.TokenFile
		}
		f := &feed{name: fc.Name, relay: newRelaySlot(), locals: map[*localWS]struct{}{},
			link: a.newLink(sc.Name+"/"+fc.Name, sc.Name, sc.Kind, client.DefaultPrefix, fc.Topic, tok, "push")}
		p.feeds[fc.Name] = f
		p.order = append(p.order, f)
	}
	return p
}

func (p *pushStream) prepare() error {
	ln, err := net.Listen("tcp", p.listen)
	if err != nil {
		return fmt.Errorf("stream %s: %w", p.name, err)
	}
	p.ln = ln
	p.log.Info("http-push listening", "addr", ln.Addr().String())
	return nil
}

func (p *pushStream) closeListener() {
	if p.ln != nil {
		p.ln.Close()
	}
}

// Addr is the listener's address (after Run has started).
func (p *pushStream) Addr() net.Addr { return p.ln.Addr() }

func (p *pushStream) run(ctx context.Context) {
	p.ctx = ctx
	var wg sync.WaitGroup
	for _, f := range p.order {
		wg.Go(func() { f.link.run(ctx, f.fromRelay) })
	}
	mux := http.NewServeMux()
	for _, m := range []string{"POST", "PUT"} {
		mux.HandleFunc(m+" /ts/{feed}", p.handlePush(true))
		mux.HandleFunc(m+" /push/{feed}", p.handlePush(false))
	}
	mux.HandleFunc("GET /ws/{feed}", p.handleWS)
	srv := &http.Server{
		Handler:           localOnly(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	wg.Go(func() {
		if err := srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("http-push listener failed", "error", err)
		}
	})
	<-ctx.Done()
	srv.Close()
	p.hmu.Lock()
	p.closing = true
	p.hmu.Unlock()
	p.handlers.Wait()
	wg.Wait()
}

// enter registers a running handler; it reports false once the stream stops.
func (p *pushStream) enter() bool {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if p.closing {
		return false
	}
	p.handlers.Add(1)
	return true
}

// handlePush takes a pushed body (POST or PUT, usually chunked and
// long-lived) and sends it on the feed's topic: MPEG-TS (/ts/ or
// Content-Type video/mp2t) in whole 188-byte packets, anything else in
// chunks of up to the stream's chunk size.
func (p *pushStream) handlePush(ts bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !p.enter() {
			apierr.WriteNew(w, http.StatusServiceUnavailable, "shutting_down", "the host is stopping")
			return
		}
		defer p.handlers.Done()
		f := p.feeds[r.PathValue("feed")]
		if f == nil {
			apierr.WriteNew(w, http.StatusNotFound, "unknown_feed", "no feed "+strconv.Quote(r.PathValue("feed"))+" in this stream")
			return
		}
		isTS := ts
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "video/mp2t" {
			isTS = true
		}
		st, log := f.link.st, f.link.log
		rc := http.NewResponseController(w)
		var superseded atomic.Bool
		release := f.takeOver(func() {
			superseded.Store(true)
			_ = rc.SetReadDeadline(time.Now())
		})
		defer release()
		st.active.Add(1)
		defer st.active.Add(-1)
		log.Info("push started", "ts", isTS, "remote", r.RemoteAddr)

		var ch chunker = fixedChunker{max: p.chunk}
		if isTS {
			ch = newTSChunker(p.chunk)
		}
		emit := func(m []byte) error {
			if f.relay.trySend(p.ctx, client.Binary, m) {
				st.sent(len(m))
			} else {
				st.drops.Add(1)
			}
			return nil
		}
		buf := make([]byte, p.chunk)
		var total int64
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				total += int64(n)
				_ = ch.write(buf[:n], emit)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				if superseded.Load() {
					log.Warn("push superseded by a newer push to the same feed", "bytes", total)
					apierr.WriteNew(w, http.StatusConflict, "push_superseded", "a newer push to the same feed took over")
				} else if errors.Is(err, os.ErrDeadlineExceeded) || p.ctx.Err() != nil {
					log.Info("push stopped", "bytes", total)
				} else {
					log.Info("push ended", "bytes", total, "error", err)
				}
				return
			}
		}
		if n := ch.pending(); n > 0 {
			log.Warn("push ended inside an MPEG-TS packet; the partial packet is dropped", "bytes", n)
		}
		log.Info("push ended", "bytes", total)
		w.WriteHeader(http.StatusNoContent)
	}
}

// takeOver makes the caller the feed's active push, interrupting the
// previous one (the newest pusher wins: a restarted ffmpeg must not wait
// for a half-dead connection to time out). release ends the turn.
func (f *feed) takeOver(interrupt func()) (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cancelPush != nil {
		f.cancelPush()
	}
	f.pushSeq++
	seq := f.pushSeq
	f.cancelPush = interrupt
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.pushSeq == seq {
			f.cancelPush = nil
		}
	}
}

// fromRelay delivers the relay's messages to the feed's local websockets.
func (f *feed) fromRelay(ctx context.Context, c *client.Conn) error {
	f.relay.set(c)
	defer f.relay.clear(c)
	return readRelay(ctx, c, f.link.st, func(typ client.MessageType, data []byte) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.locals) == 0 {
			return
		}
		m := wsMsg{typ: typ, data: bytes.Clone(data)}
		for l := range f.locals {
			select {
			case l.q <- m:
			default:
				f.link.st.drops.Add(1)
			}
		}
	})
}

// handleWS bridges a local websocket to the feed's topic both ways.
func (p *pushStream) handleWS(w http.ResponseWriter, r *http.Request) {
	if !p.enter() {
		apierr.WriteNew(w, http.StatusServiceUnavailable, "shutting_down", "the host is stopping")
		return
	}
	defer p.handlers.Done()
	f := p.feeds[r.PathValue("feed")]
	if f == nil {
		apierr.WriteNew(w, http.StatusNotFound, "unknown_feed", "no feed "+strconv.Quote(r.PathValue("feed"))+" in this stream")
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	c.SetReadLimit(localReadLimit)
	st, log := f.link.st, f.link.log
	l := &localWS{q: make(chan wsMsg, localQueue)}
	f.mu.Lock()
	f.locals[l] = struct{}{}
	f.mu.Unlock()
	st.active.Add(1)
	log.Info("local websocket connected", "remote", r.RemoteAddr)
	defer func() {
		f.mu.Lock()
		delete(f.locals, l)
		f.mu.Unlock()
		st.active.Add(-1)
		log.Info("local websocket closed", "remote", r.RemoteAddr)
	}()

	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		defer cancel()
		for {
			select {
			case m := <-l.q:
				wctx, wcancel := context.WithTimeout(ctx, localWriteTimeout)
				err := c.Write(wctx, websocket.MessageType(m.typ), m.data)
				wcancel()
				if err != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	})
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			cancel()
			return
		}
		splitMessage(client.MessageType(typ), data, maxLocalMessage, func(part []byte) {
			if f.relay.trySend(p.ctx, client.MessageType(typ), part) {
				st.sent(len(part))
			} else {
				st.drops.Add(1)
			}
		})
	}
}

// splitMessage calls emit with data in parts of at most max bytes; text is
// cut only between UTF-8 characters.
func splitMessage(typ client.MessageType, data []byte, max int, emit func([]byte)) {
	if len(data) <= max {
		emit(data)
		return
	}
	for len(data) > 0 {
		n := min(len(data), max)
		if typ == client.Text && n < len(data) {
			for n > 0 && !utf8.RuneStart(data[n]) {
				n--
			}
			if n == 0 {
				n = min(len(data), max)
			}
		}
		emit(data[:n])
		data = data[n:]
	}
}
