package relay

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// Budget scenario shared by the tests below: ten readers that never read and
// one that keeps up, on one topic, with a node budget far below what the
// stalled readers' own queues could hold (10 × 64 KiB against 64 KiB).
const (
	budgetTestBudget  = 64 << 10
	budgetTestQueue   = 64 << 10 // per connection: only the node budget binds
	budgetTestStalled = 10
	budgetTestPayload = 1000
	budgetTestSize    = budgetTestPayload + MessageOverhead
	budgetTestN       = 300 // 300 × 1 KiB to each stalled reader ≫ the budget
)

// connOf returns the server's connection for m.
func (h *harness) connOf(m *memConn) *conn {
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	for c := range h.srv.conns {
		if c.tc == m {
			return c
		}
	}
	h.t.Fatal("connection not registered")
	return nil
}

type budgetScenario struct {
	h       *harness
	w, fast *memConn
	stalled []*memConn
}

func newBudgetScenario(t *testing.T, policy Policy) *budgetScenario {
	// Under PolicyClose the test lets the stalled readers take their close
	// frame; otherwise shutdown cuts them off.
	closeTimeout := 50 * time.Millisecond
	if policy == PolicyClose {
		closeTimeout = time.Minute
	}
	h := newHarness(t, Config{
		SendQueueBytes: budgetTestQueue, MaxMessageBytes: 1 << 10, QueueBudgetBytes: budgetTestBudget,
		SlowConsumer: policy, WriteTimeout: time.Minute, CloseTimeout: closeTimeout, PingInterval: -1,
	})
	sc := &budgetScenario{h: h, w: h.connect(rw("t"))}
	for range budgetTestStalled {
		m := newMemConn()
		m.stall = make(chan struct{})
		h.connectConn(m, Info{Topic: "t", CanRead: true})
		sc.stalled = append(sc.stalled, m)
	}
	// Last, so that when it has a message every stalled reader has been
	// offered it too.
	sc.fast = h.connect(Info{Topic: "t", CanRead: true})
	return sc
}

// run sends budgetTestN messages; the fast reader takes each as it comes and
// after each one the node's queued bytes are checked against the budget, by
// the node's counter and by the sum over the connections.
func (sc *budgetScenario) run(t *testing.T) {
	t.Helper()
	const bound = budgetTestBudget + budgetTestSize // the budget + at most one message
	for i := range budgetTestN {
		sc.w.send(t, Binary, fmt.Sprintf("%04d%0*d", i, budgetTestPayload-4, 0))
		if got := string(sc.fast.recv(t).Data[:4]); got != fmt.Sprintf("%04d", i) {
			t.Fatalf("fast reader got message %s, want %04d", got, i)
		}
		if n := sc.h.srv.Stats().QueuedBytes; n > bound {
			t.Fatalf("after message %d the node counts %d queued bytes, budget %d", i, n, budgetTestBudget)
		}
		var sum int
		for _, cs := range sc.h.srv.Connections() {
			sum += cs.QueuedBytes
		}
		if sum > bound {
			t.Fatalf("after message %d the connections hold %d queued bytes, budget %d", i, sum, budgetTestBudget)
		}
	}
}

// TestQueueBudgetDrop: readers that never read cannot take the node past its
// queue budget; a reader that keeps up on the same topic still gets every
// message; the slow ones' losses are counted as queue_budget.
func TestQueueBudgetDrop(t *testing.T) {
	sc := newBudgetScenario(t, PolicyDrop)
	sc.run(t)
	st := sc.h.srv.Stats()
	// Each stalled reader holds one message in its stalled write and a few
	// queued; everything else it was offered was dropped for the budget.
	if min := uint64(budgetTestStalled * (budgetTestN - budgetTestBudget/budgetTestSize)); st.Drops["queue_budget"] < min {
		t.Errorf("queue_budget drops %d, want at least %d (drops %v)", st.Drops["queue_budget"], min, st.Drops)
	}
	if st.Drops["queue_head"]+st.Drops["queue_tail"] != 0 {
		t.Errorf("per-connection drops %v: only the budget should have bound", st.Drops)
	}
	if st.QueueBudget != budgetTestBudget {
		t.Errorf("Stats().QueueBudget %d, want %d", st.QueueBudget, budgetTestBudget)
	}
	for _, cs := range sc.h.srv.Connections() {
		if cs.Info.CanRead && cs.MessagesOut == budgetTestN && cs.Drops != 0 {
			t.Errorf("fast reader dropped %v", cs.DropsByReason)
		}
	}
	// The node's counter is the sum of the connections' queues.
	wait.For(t, "counter equal to the connections' sum", func() bool {
		var sum int
		for _, cs := range sc.h.srv.Connections() {
			sum += cs.QueuedBytes
		}
		return int64(sum) == sc.h.srv.Stats().QueuedBytes
	})
	// A stalled reader that resumes gets what it still holds, in order,
	// then what is sent next. (What it holds may be only the batch it was
	// writing when it stalled: a batch cannot be taken back, and with it
	// the reader was over its fair share, so newer messages were dropped.)
	r := sc.stalled[0]
	close(r.stall)
	wait.For(t, "resumed reader's queue written", func() bool { return sc.h.connOf(r).status().QueuedBytes == 0 })
	sc.w.send(t, Binary, fmt.Sprintf("%04d%0*d", budgetTestN, budgetTestPayload-4, 0))
	last := -1
	for last != budgetTestN {
		var i int
		fmt.Sscanf(string(r.recv(t).Data[:4]), "%04d", &i)
		if i <= last {
			t.Fatalf("resumed reader: message %d after %d", i, last)
		}
		last = i
	}
}

// TestQueueBudgetClose: under the close policy the readers that hog the
// budget are closed with 4008 (reason queue_budget); the one that keeps up is
// not.
func TestQueueBudgetClose(t *testing.T) {
	sc := newBudgetScenario(t, PolicyClose)
	sc.run(t)
	// They are slow, not dead: once their stalled write completes they get
	// the close frame.
	for _, m := range sc.stalled {
		close(m.stall)
	}
	for _, m := range sc.stalled {
		if code := m.waitClosed(t); code != CloseSlowConsumer {
			t.Fatalf("stalled reader closed with %d, want %d", code, CloseSlowConsumer)
		}
	}
	wait.For(t, "closes counted", func() bool {
		return sc.h.srv.Stats().Closes["queue_budget"] == budgetTestStalled
	})
	for _, m := range sc.stalled {
		if why, _ := sc.h.reason(m); why != ReasonQueueBudget {
			t.Errorf("stalled reader closed for %v, want %v", why, ReasonQueueBudget)
		}
	}
	select {
	case <-sc.fast.closed:
		t.Fatal("the reader that keeps up was closed")
	default:
	}
	sc.w.send(t, Text, "still here")
	if got := sc.fast.recv(t); string(got.Data) != "still here" {
		t.Fatalf("fast reader got %q", got.Data)
	}
}

// TestQueueBudgetPairs: with the node's budget mostly held by a stalled
// reader elsewhere, a pair whose reader is slow holds up its sender (within
// the budget) instead of dropping, and loses nothing.
func TestQueueBudgetPairs(t *testing.T) {
	srv, _ := NewServer(Config{SendQueueBytes: 16 << 10, MaxMessageBytes: 1 << 10, QueueBudgetBytes: 16 << 10, PingInterval: -1, WriteTimeout: time.Minute, CloseTimeout: 50 * time.Millisecond})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		wg.Wait()
	})
	w, stalled := newMemConn(), newMemConn()
	stalled.stall = make(chan struct{})
	for _, c := range []struct {
		m    *memConn
		info Info
	}{{w, rw("t")}, {stalled, Info{Topic: "t", CanRead: true}}} {
		wg.Add(1)
		go func() { defer wg.Done(); srv.Accept(context.Background(), c.m, c.info) }()
	}
	wait.For(t, "registered", func() bool { return srv.Stats().Connections == 2 })
	for i := range 30 { // 30 KiB to a reader that never reads: the budget fills
		w.send(t, Binary, fmt.Sprintf("%0900d", i))
	}
	wait.For(t, "budget in use", func() bool { return srv.Stats().QueuedBytes > 8<<10 })

	a, b := newMemConn(), newMemConn()
	b.stall = make(chan struct{}) // b is slow at first
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.AcceptPair(context.Background(), a, Info{Topic: "pair:x", CanRead: true, CanWrite: true}, b, Info{Topic: "pair:x", CanRead: true, CanWrite: true})
	}()
	wait.For(t, "pair registered", func() bool { return srv.Stats().Connections == 4 })
	go func() {
		for i := range 200 {
			a.in <- Message{Type: Binary, Data: fmt.Appendf(nil, "%04d%0996d", i, 0)}
		}
	}()
	// b's own queue (16 KiB) could hold more, but the budget holds up a.
	wait.For(t, "sender held up", func() bool { return len(a.in) == cap(a.in) })
	if n := srv.Stats().QueuedBytes; n > 16<<10+1<<10+MessageOverhead {
		t.Fatalf("queued %d bytes, budget %d (+ one message for the pair)", n, 16<<10)
	}
	close(b.stall)
	for i := range 200 {
		if got := string(b.recv(t).Data[:4]); got != fmt.Sprintf("%04d", i) {
			t.Fatalf("pair message %s, want %04d", got, i)
		}
	}
	for _, cs := range srv.Connections() {
		if cs.Info.Topic == "pair:x" && cs.Drops != 0 {
			t.Fatalf("pair dropped %v", cs.DropsByReason)
		}
	}
}

// TestQueueBudgetAllocations: the budget's slow path (a receiver over its
// fair share making room from its own queue) allocates nothing either.
func TestQueueBudgetAllocations(t *testing.T) {
	srv, _ := NewServer(Config{PingInterval: -1, SendQueueBytes: 1 << 20, QueueBudgetBytes: 1 << 20, MaxMessageBytes: 1 << 10, WriteTimeout: time.Hour, CloseTimeout: 50 * time.Millisecond})
	var wg sync.WaitGroup
	readers := make([]*memConn, 20)
	for i := range readers {
		readers[i] = newMemConn()
		readers[i].stall = make(chan struct{}) // never reads: queues only grow
		wg.Add(1)
		go func() { defer wg.Done(); srv.Accept(context.Background(), readers[i], Info{Topic: "t", CanRead: true}) }()
	}
	wait.For(t, "registered", func() bool { return srv.Stats().Connections == len(readers) })
	c := newConn(srv, newMemConn(), rw("t"))
	srv.mu.Lock()
	c.topic = srv.topicLocked("t")
	srv.mu.Unlock()
	m := Message{Type: Binary, Data: make([]byte, 1024)}
	fanout := func() {
		for _, r := range *c.topic.readers.Load() {
			r.enqueue(m, nil)
		}
	}
	for range 5000 { // fill the budget and warm up queue arrays
		fanout()
	}
	before := srv.Stats().Drops["queue_budget"]
	allocs := testing.AllocsPerRun(2000, fanout)
	if allocs != 0 {
		t.Fatalf("fan-out over budget: %.2f allocations per message, want 0", allocs)
	}
	if srv.Stats().Drops["queue_budget"] == before {
		t.Fatal("the budget's slow path did not run")
	}
	if n := srv.Stats().QueuedBytes; n > 1<<20 {
		t.Fatalf("queued %d bytes, budget %d", n, 1<<20)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	wg.Wait()
}

func TestQueueBudgetConfig(t *testing.T) {
	_, err := NewServer(Config{QueueBudgetBytes: -1})
	if err == nil || !strings.Contains(err.Error(), "queue budget") {
		t.Errorf("negative budget: %v, want an error naming the queue budget", err)
	}
	if _, err := NewServer(Config{QueueBudgetBytes: 1000, MaxMessageBytes: 1000}); err == nil {
		t.Error("a budget smaller than one message was accepted")
	}
	srv, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := srv.Config().QueueBudgetBytes, max(DefaultQueueBudget(), DefaultSendQueueBytes); got != want {
		t.Errorf("default budget %d, want %d", got, want)
	}
	if got := srv.Config().SendQueueBytes; got != DefaultSendQueueBytes {
		t.Errorf("default send queue %d", got)
	}
}

func TestMemoryLimit(t *testing.T) {
	const meminfo = "MemTotal:       24683568 kB\nMemFree:        1000 kB\n"
	const memTotal = 24683568 << 10
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"nothing readable", nil, 0},
		{"meminfo only", map[string]string{"/proc/meminfo": meminfo}, memTotal},
		{"meminfo in an unknown unit", map[string]string{"/proc/meminfo": "MemTotal: 5 MB\n"}, 0},
		{"cgroup v2 without a limit", map[string]string{
			"/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/system.slice/sb.service\n",
			"/sys/fs/cgroup/system.slice/sb.service/memory.max": "max\n",
		}, memTotal},
		{"cgroup v2: the smallest limit on the way up", map[string]string{
			"/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/system.slice/sb.service\n",
			"/sys/fs/cgroup/system.slice/sb.service/memory.max": "4294967296\n",
			"/sys/fs/cgroup/system.slice/memory.max":            "2147483648\n",
		}, 2 << 30},
		{"cgroup v2 in a container (namespace root)", map[string]string{
			"/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/\n",
			"/sys/fs/cgroup/memory.max": "536870912\n",
		}, 512 << 20},
		{"cgroup v1, group not visible: the root's limit", map[string]string{
			"/proc/meminfo": meminfo, "/proc/self/cgroup": "9:name=systemd:/\n4:memory:/docker/abc\n0::/\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824\n",
		}, 1 << 30},
		{"cgroup v1 unlimited", map[string]string{
			"/proc/meminfo": meminfo, "/proc/self/cgroup": "4:cpu,memory:/x\n",
			"/sys/fs/cgroup/memory/x/memory.limit_in_bytes": "9223372036854771712\n",
		}, memTotal},
		{"cgroup limit without meminfo", map[string]string{
			"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "536870912\n",
		}, 512 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := func(name string) ([]byte, error) {
				if s, ok := tc.files[name]; ok {
					return []byte(s), nil
				}
				return nil, fs.ErrNotExist
			}
			if got := memoryLimit(read); got != tc.want {
				t.Errorf("memoryLimit = %d, want %d", got, tc.want)
			}
		})
	}
	t.Logf("on this machine: memory limit %d bytes, default budget %d", memoryLimit(os.ReadFile), DefaultQueueBudget())
}
