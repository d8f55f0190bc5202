package server_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/cluster/natsbus"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// cutProxy forwards TCP connections to a target until cut: then it breaks
// every connection it carries (no goodbye gets through) and refuses new
// ones, until healed. It stands for a node's network to NATS failing.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		p.mu.Lock()
		if err != nil || p.cut {
			p.mu.Unlock()
			down.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		p.conns[down], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(down, up)
		go p.pipe(up, down)
	}
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// setCut breaks (true) or restores (false) the path.
func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// TestNATSNodeCutOffLeavesStatusWithin3s (issue 14 item 4 and the faults
// section): three nodes on an external NATS with the bus's default timing;
// node c's network to NATS breaks without a goodbye, as if it were killed.
// Within 3 s a's /status?node=all no longer counts c, lists it down and
// reports the cluster degraded; c reports its bus disconnected (degraded),
// and keeps relaying its local topic. When the network heals, both see a
// healthy cluster of three again.
func TestNATSNodeCutOffLeavesStatusWithin3s(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	proxy := startCutProxy(t, ns.Addr().String())
	node := func(id, url string) *servertest.Server {
		bus, err := natsbus.Open(natsbus.Options{NodeID: id, URL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() }) // after the node's shutdown: an injected bus is the caller's
		return servertest.Start(t, func(c *server.Config, d *server.Deps) { c.NodeID, d.Bus = id, bus })
	}
	a, b, c := node("a", ns.ClientURL()), node("b", ns.ClientURL()), node("c", proxy.URL())
	for _, n := range []*servertest.Server{a, b, c} {
		wait.Within(t, 30*time.Second, n.Config.NodeID+" joined", func() bool { return n.Ready() && len(n.Deps.Bus.Members()) == 3 })
	}
	c.Dial(t, "lab/cam", auth.ScopeRead)
	wait.For(t, "a's report counts c's reader", func() bool {
		r := clusterReport(t, a)
		n := nodeByID(r, "c")
		return r.Health == control.HealthOK && r.Members == 3 && n != nil && n.Summary != nil && n.Summary.Connections == 1 &&
			n.Summary.Bus.Kind == "nats" && n.Summary.Bus.Connected && r.Totals.Connections == 1
	})

	proxy.setCut(true)
	cut := time.Now()
	wait.Within(t, 3*time.Second, "c down on a", func() bool {
		r := clusterReport(t, a)
		n := nodeByID(r, "c")
		return r.Members == 2 && n != nil && n.Status == control.NodeDown && r.Health == control.HealthDegraded && r.Totals.Connections == 0
	})
	t.Logf("c down on a after %v", time.Since(cut).Round(time.Millisecond))
	wait.For(t, "c degraded: its bus disconnected", func() bool {
		r := clusterReport(t, c)
		return r.Health == control.HealthDegraded && len(r.Problems) > 0 && r.Problems[0].Code == control.ProblemBusDisconnected
	})
	// c keeps serving its local topics (once it sees itself alone, it is
	// every topic's home: the access endpoint places codes there).
	wait.For(t, "c alone", func() bool { return len(c.Deps.Bus.Members()) == 1 })
	reader := c.Dial(t, "lab/local", auth.ScopeRead)
	writer := c.Dial(t, "lab/local", auth.ScopeWrite)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := writer.Write(ctx, client.Text, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := reader.Read(ctx); err != nil || string(data) != "still here" {
		st := c.Relay().Stats()
		t.Fatalf("c's local topic during the outage: %q %v (c: %d in, %d out, drops %v; readers here %d)", data, err,
			st.MessagesIn, st.MessagesOut, st.Drops, c.TopicConns("lab/local"))
	}

	proxy.setCut(false)
	wait.Within(t, 15*time.Second, "a healthy cluster of three again on a and c", func() bool {
		for _, n := range []*servertest.Server{a, c} {
			r := clusterReport(t, n)
			if r.Health != control.HealthOK || r.Members != 3 || len(r.Nodes) != 3 {
				return false
			}
		}
		return true
	})
}
