package relay

import (
	"fmt"
	"testing"
	"time"
)

// TestPublishShared: the server's message reaches every local reader that
// is not Backpressure, the way a writer's would, and is offered to Peers
// exactly while another node reads the topic, whether or not the topic has
// local connections.
func TestPublishShared(t *testing.T) {
	fp := newFakePeers()
	h := newPeeredHarness(t, Config{PingInterval: -1}, fp)
	readers := []*memConn{h.connect(Info{Topic: "t", CanRead: true}), h.connect(rw("t"))}
	h.connect(Info{Topic: "t", CanWrite: true})                            // cannot read: not offered
	pair := h.connect(Info{Topic: "t", CanRead: true, Backpressure: true}) // private to its node: left out

	queued, fw := h.srv.PublishShared("t", Message{Type: Text, Data: []byte("local")})
	if queued != len(readers) || fw {
		t.Fatalf("no remote reader: queued %d, forwarded %v; want %d, false", queued, fw, len(readers))
	}
	h.srv.SetRemoteInterest("t", true)
	queued, fw = h.srv.PublishShared("t", Message{Type: Binary, Data: []byte("everywhere")})
	if queued != len(readers) || !fw {
		t.Fatalf("remote reader: queued %d, forwarded %v; want %d, true", queued, fw, len(readers))
	}
	for _, r := range readers {
		if m := r.recv(t); m.Type != Text || string(m.Data) != "local" {
			t.Fatalf("first message %v %q, want text \"local\"", m.Type, m.Data)
		}
		if m := r.recv(t); m.Type != Binary || string(m.Data) != "everywhere" {
			t.Fatalf("second message %v %q, want binary \"everywhere\"", m.Type, m.Data)
		}
	}
	pair.expectNothing(t)
	if got := fp.forwardsOf("t"); len(got) != 1 || got[0] != (forwarded{"t", Binary, "everywhere"}) {
		t.Fatalf("forwards %+v, want the one message published while another node read t", got)
	}

	// A topic with no local connection: only other nodes can read it.
	if queued, forwarded := h.srv.PublishShared("elsewhere", Message{Type: Text, Data: []byte("x")}); queued != 0 || forwarded {
		t.Fatalf("nobody reads: queued %d, forwarded %v", queued, forwarded)
	}
	h.srv.SetRemoteInterest("elsewhere", true)
	if queued, forwarded := h.srv.PublishShared("elsewhere", Message{Type: Text, Data: []byte("y")}); queued != 0 || !forwarded {
		t.Fatalf("read on another node only: queued %d, forwarded %v; want 0, true", queued, forwarded)
	}
	if got := fp.forwardsOf("elsewhere"); len(got) != 1 || got[0].data != "y" {
		t.Fatalf("forwards %+v, want y alone", got)
	}
}

// TestPublishSharedWithoutPeers: on a node of its own nothing is forwarded.
func TestPublishSharedWithoutPeers(t *testing.T) {
	h := newHarness(t, Config{PingInterval: -1})
	r := h.connect(Info{Topic: "t", CanRead: true})
	h.srv.SetRemoteInterest("t", true) // means nothing without Peers
	if queued, forwarded := h.srv.PublishShared("t", Message{Type: Text, Data: []byte("m")}); queued != 1 || forwarded {
		t.Fatalf("queued %d, forwarded %v; want 1, false", queued, forwarded)
	}
	if got := string(r.recv(t).Data); got != "m" {
		t.Fatalf("got %q", got)
	}
}

// TestPublishSharedAllocations: the server's message queued for 100 local
// readers and forwarded allocates nothing.
func TestPublishSharedAllocations(t *testing.T) {
	srv, _ := NewServer(Config{PingInterval: -1})
	peers := &nopPeers{}
	if err := srv.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	stop := allocReaders(t, srv, "t", 100)
	srv.SetRemoteInterest("t", true)
	m := Message{Type: Binary, Data: make([]byte, 1024)}
	publish := func() {
		if n, fw := srv.PublishShared("t", m); n != 100 || !fw {
			t.Fatalf("queued for %d readers, forwarded %v; want 100, true", n, fw)
		}
	}
	for range 1000 {
		publish()
	}
	if allocs := testing.AllocsPerRun(2000, publish); allocs != 0 {
		t.Fatalf("PublishShared to 100 readers and a forward: %.2f allocations per message, want 0", allocs)
	}
	if stop() == 0 {
		t.Fatal("nothing delivered")
	}
}

// TestPublishSharedQueueBounds: the server's messages obey each reader's
// queue bound as a writer's do: a stalled reader loses its oldest ones,
// counted under queue_head/queue_tail, while a reader that keeps up gets
// them all; PublishShared never waits.
func TestPublishSharedQueueBounds(t *testing.T) {
	const queue = 8 << 10
	h := newPeeredHarness(t, Config{SendQueueBytes: queue, MaxMessageBytes: 1 << 10, WriteTimeout: time.Minute,
		CloseTimeout: 50 * time.Millisecond, PingInterval: -1}, newFakePeers())
	stalled := newMemConn()
	stalled.stall = make(chan struct{})
	h.connectConn(stalled, Info{Topic: "t", CanRead: true})
	fast := h.connect(Info{Topic: "t", CanRead: true})
	const n = 200 // 200 × ~1 KiB ≫ 8 KiB
	for i := range n {
		if queued, _ := h.srv.PublishShared("t", Message{Type: Binary, Data: fmt.Appendf(nil, "%04d%0996d", i, 0)}); queued != 2 {
			t.Fatalf("queued for %d readers, want 2", queued)
		}
		if got := string(fast.recv(t).Data[:4]); got != fmt.Sprintf("%04d", i) {
			t.Fatalf("fast reader got %s, want %04d", got, i)
		}
	}
	st := h.srv.Stats()
	if lost := st.Drops["queue_head"] + st.Drops["queue_tail"]; lost < n-queue/(1000+MessageOverhead)-1 {
		t.Fatalf("stalled reader lost %d messages, want at least %d", lost, n-queue/(1000+MessageOverhead)-1)
	}
}

// TestPublishSharedCountedAsReceived: the server's shared messages count in
// Stats' MessagesIn and BytesIn as a writer's do (and in SharedIn), so that
// /status, the stats topic and metrics agree with what readers get, whether
// or not anybody reads the topic.
func TestPublishSharedCountedAsReceived(t *testing.T) {
	h := newHarness(t, Config{PingInterval: -1})
	w := h.connect(Info{Topic: "t", CanWrite: true})
	r := h.connect(Info{Topic: "t", CanRead: true})
	w.send(t, Text, "abc")
	r.recv(t)
	before := h.srv.Stats()
	h.srv.PublishShared("t", Message{Type: Binary, Data: []byte("12345")})
	h.srv.PublishShared("nobody-reads", Message{Type: Text, Data: []byte("xy")})
	after := h.srv.Stats()
	if d := after.MessagesIn - before.MessagesIn; d != 2 {
		t.Errorf("MessagesIn grew by %d, want 2", d)
	}
	if d := after.BytesIn - before.BytesIn; d != 7 {
		t.Errorf("BytesIn grew by %d, want 7", d)
	}
	if after.SharedIn != 2 {
		t.Errorf("SharedIn %d, want 2", after.SharedIn)
	}
	if before.MessagesIn != 1 || before.BytesIn != 3 {
		t.Errorf("before: MessagesIn %d, BytesIn %d; want the writer's 1 and 3", before.MessagesIn, before.BytesIn)
	}
}
