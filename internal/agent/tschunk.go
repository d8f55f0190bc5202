package agent

// chunker cuts a byte stream into messages.
type chunker interface {
	// write takes the next bytes of the stream and calls emit for each
	// message they complete, in order. emit must not keep its argument.
	// write stops at emit's first error and returns it.
	write(p []byte, emit func([]byte) error) error
	// pending is the number of bytes held for a message not yet complete.
	pending() int
}

// tsChunker cuts an MPEG-TS stream into messages of whole 188-byte
// packets, at most max bytes each. Each write emits every whole packet it
// completes (so a message is sent as soon as the pusher's data arrive, not
// when max bytes have gathered) and keeps a partial packet until the next.
type tsChunker struct {
	max  int    // a positive multiple of tsPacket
	part []byte // a partial packet, len < tsPacket; owns its storage
	msg  []byte // reused for a message that starts with a completed partial packet
}

// newTSChunker returns a chunker whose messages hold at most max bytes,
// rounded down to whole packets (at least one).
func newTSChunker(max int) *tsChunker {
	max -= max % tsPacket
	if max < tsPacket {
		max = tsPacket
	}
	return &tsChunker{max: max, part: make([]byte, 0, tsPacket)}
}

func (c *tsChunker) pending() int { return len(c.part) }

func (c *tsChunker) write(p []byte, emit func([]byte) error) error {
	if len(c.part) > 0 {
		// Complete the partial packet first; it leads the next message.
		n := min(tsPacket-len(c.part), len(p))
		c.part = append(c.part, p[:n]...)
		p = p[n:]
		if len(c.part) < tsPacket {
			return nil
		}
		// The completed packet plus as many whole packets of p as fit.
		take := min(len(p)-len(p)%tsPacket, c.max-tsPacket)
		c.msg = append(append(c.msg[:0], c.part...), p[:take]...)
		c.part = c.part[:0]
		p = p[take:]
		if err := emit(c.msg); err != nil {
			return err
		}
	}
	for len(p) >= tsPacket {
		n := min(len(p)-len(p)%tsPacket, c.max)
		if err := emit(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	c.part = append(c.part, p...)
	return nil
}

// fixedChunker cuts a stream into messages of at most max bytes, one or
// more per write, holding nothing back.
type fixedChunker struct{ max int }

func (c fixedChunker) pending() int { return 0 }

func (c fixedChunker) write(p []byte, emit func([]byte) error) error {
	for len(p) > 0 {
		n := min(len(p), c.max)
		if err := emit(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
