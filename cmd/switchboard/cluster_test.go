package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// testCluster is three `switchboard serve` processes clustered over their
// embedded nats-servers and one PostgreSQL, behind a real HAProxy running
// deploy/haproxy.cfg.
type testCluster struct {
	t      *testing.T
	lb     string // the load balancer's URL: every node's --public-url
	key    *auth.Key
	nodes  []*clusterNode
	byID   map[string]*clusterNode
	logDir string
}

// clusterNode is one node: its child process and the arguments to start it
// again.
type clusterNode struct {
	id, addr string
	args     []string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// freePorts reserves n loopback ports by listening on them, then frees them
// for the processes the test starts (which need to know each other's ports
// before any of them runs).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func startTestCluster(t *testing.T) *testCluster {
	t.Helper()
	haproxy := servertest.Tool(t, "haproxy", "haproxy")
	dbURL := pgtest.Start(t)
	dir := t.TempDir()
	secret := []byte("cluster-test-secret-0123456789abcdef")
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := auth.NewHMACKey("HS256", secret)
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 7) // the load balancer, and per node its HTTP and route listeners
	c := &testCluster{t: t, lb: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), key: key, byID: map[string]*clusterNode{}, logDir: dir}
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("127.0.0.1:%d", ports[4+i]))
	}
	for i := range 3 {
		n := &clusterNode{id: fmt.Sprintf("n%d", i+1), addr: fmt.Sprintf("127.0.0.1:%d", ports[1+i])}
		n.args = []string{"serve", "--listen", n.addr, "--public-url", c.lb, "--node-id", n.id,
			"--data-dir", filepath.Join(dir, n.id), "--secret-file", secretFile, "--database-url", dbURL,
			"--cluster-listen", routes[i], "--cluster-peer", strings.Join(routes, ","),
			"--trusted-proxy", "127.0.0.1", "--log-level", "warn",
			"--max-requests-per-address", "100000", "--drain-window", "1s"} // the cluster's default lame duck (5 s)
		c.nodes = append(c.nodes, n)
		c.byID[n.id] = n
	}
	for _, n := range c.nodes {
		c.start(n)
	}
	for _, n := range c.nodes {
		c.waitReady(n)
	}

	// HAProxy with the shipped configuration, on this test's addresses.
	shipped, err := os.ReadFile("../../deploy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(shipped), "bind 0.0.0.0:8080", fmt.Sprintf("bind 127.0.0.1:%d", ports[0]), 1)
	for _, n := range c.nodes {
		re := regexp.MustCompile(`(?m)^(\s*server ` + n.id + `) \S+`)
		if !re.MatchString(cfg) {
			t.Fatalf("deploy/haproxy.cfg has no server line for %s", n.id)
		}
		cfg = re.ReplaceAllString(cfg, "${1} "+n.addr)
	}
	// Request logs on stdout, shown when the test fails.
	cfg = strings.Replace(cfg, "global\n", "global\n    log stdout format raw local0\n", 1)
	cfg = strings.Replace(cfg, "defaults\n", "defaults\n    log global\n    option httplog\n", 1)
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	lb := exec.Command(haproxy, "-db", "-f", cfgFile)
	lbLog, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	lb.Stdout, lb.Stderr = lbLog, lbLog
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lb.Process.Kill()
		lb.Wait()
		lbLog.Close()
		if t.Failed() {
			b, _ := os.ReadFile(lbLog.Name())
			t.Logf("haproxy:\n%s", b)
		}
	})
	wait.For(t, "the load balancer", func() bool { return httpStatus(c.lb+"/readyz") == http.StatusOK })
	return c
}

// start runs n's process.
func (c *testCluster) start(n *clusterNode) {
	c.t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join(n.args, "\x1f"))
	logs, err := os.OpenFile(filepath.Join(c.logDir, n.id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); logs.Close(); close(n.exited) }()
	c.t.Cleanup(func() {
		cmd.Process.Kill()
		<-n.exited
		if c.t.Failed() {
			b, _ := os.ReadFile(filepath.Join(c.logDir, n.id+".log"))
			c.t.Logf("node %s:\n%s", n.id, tailLines(string(b), 40))
		}
	})
}

func (c *testCluster) waitReady(n *clusterNode) {
	c.t.Helper()
	wait.Within(c.t, 60*time.Second, "node "+n.id+" ready", func() bool { return httpStatus("http://"+n.addr+"/readyz") == http.StatusOK })
}

func httpStatus(u string) int {
	resp, err := http.Get(u)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// token signs a session token for topic, for the cluster (audience: the
// load balancer's URL).
func (c *testCluster) token(topic string, scopes ...string) string {
	c.t.Helper()
	now := time.Now()
	tok, err := c.key.Sign(auth.Claims{Topic: topic, Prefix: wire.PrefixSession, Scopes: scopes,
		RegisteredClaims: jwt.RegisteredClaims{Audience: jwt.ClaimStrings{c.lb},
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now)}})
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

// session is a new session through the load balancer: the access POST,
// then the websocket GET with its code. It returns the connection, the
// node the code names and the node that served the websocket.
func (c *testCluster) session(ctx context.Context, topic, tok string) (*websocket.Conn, string, string, error) {
	uri, err := client.Access(ctx, c.lb, topic, tok, nil)
	if err != nil {
		return nil, "", "", fmt.Errorf("access: %w", err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, "", "", err
	}
	codeNode, _ := wire.ParseCode(u.Query().Get("code"))
	ws, resp, err := websocket.Dial(ctx, uri, nil)
	if err != nil {
		return nil, codeNode, "", fmt.Errorf("websocket: %w", err)
	}
	ws.SetReadLimit(-1)
	return ws, codeNode, resp.Header.Get(wire.HeaderNode), nil
}

// TestClusterBehindHAProxy: three nodes behind HAProxy with the shipped
// configuration. The websocket of every new session reaches the node its
// code names; a message reaches readers on every node, in order; after a
// node is killed with SIGKILL no new session fails, and its clients come
// back through the load balancer; a node stopped with SIGTERM is taken out
// of rotation during its lame-duck period, so no new session fails while
// it leaves either.
func TestClusterBehindHAProxy(t *testing.T) {
	c := startTestCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Routing on the code's suffix: topics are placed at their home nodes,
	// which spread over the cluster, and every websocket reaches its
	// code's node.
	homes := map[string]int{}
	for i := range 24 {
		topic := fmt.Sprintf("lab%d/cam", i)
		ws, codeNode, served, err := c.session(ctx, topic, c.token(topic, auth.ScopeRead))
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		ws.CloseNow()
		if served != codeNode {
			t.Fatalf("session %d: the code names %s, the websocket went to %s", i, codeNode, served)
		}
		homes[served]++
	}
	if len(homes) < 2 {
		t.Fatalf("the homes of 24 topics: %v, want them spread", homes)
	}

	// Readers of one topic on every node: three through the load balancer
	// (at the topic's home), and one on each other node, whose handshake
	// goes to that node directly with the home's code (taken over the bus).
	const topic = "lab/cam"
	type reader struct {
		ws   *websocket.Conn
		node string
	}
	var readers []reader
	var home string
	for i := range 3 {
		ws, _, served, err := c.session(ctx, topic, c.token(topic, auth.ScopeRead))
		if err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
		defer ws.CloseNow()
		home = served
		readers = append(readers, reader{ws, served})
	}
	for _, n := range c.nodes {
		if n.id == home {
			continue
		}
		uri, err := client.Access(ctx, c.lb, topic, c.token(topic, auth.ScopeRead), nil)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = n.addr
		ws, resp, err := websocket.Dial(ctx, u.String(), nil)
		if err != nil {
			t.Fatalf("a code of %s at %s: %v", home, n.id, err)
		}
		defer ws.CloseNow()
		if served := resp.Header.Get(wire.HeaderNode); served != n.id {
			t.Fatalf("the handshake sent to %s was answered by %s", n.id, served)
		}
		readers = append(readers, reader{ws, n.id})
	}

	// One writer's messages reach every reader, on every node, in order.
	writer, _, writerNode, err := c.session(ctx, topic, c.token(topic, auth.ScopeWrite))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { writer.CloseNow() }()
	const messages = 50
	var wg sync.WaitGroup
	errs := make(chan error, len(readers))
	for _, r := range readers {
		wg.Go(func() {
			for i := range messages {
				_, data, err := r.ws.Read(ctx)
				if err != nil {
					errs <- fmt.Errorf("reader on %s, message %d: %w", r.node, i, err)
					return
				}
				if want := fmt.Sprintf("m%d", i); string(data) != want {
					errs <- fmt.Errorf("reader on %s: got %q, want %q", r.node, data, want)
					return
				}
			}
		})
	}
	for i := range messages {
		if err := writer.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// kill -9 the topic's home: its readers and the writer are cut off; new
	// sessions go on, none failing (codes placed at the dead home are
	// issued elsewhere), and the others keep relaying.
	victim := c.byID[home]
	cutOff := 0
	for _, r := range readers {
		if r.node == victim.id {
			cutOff++
		}
	}
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.exited
	newSessions := func(what string, n int) {
		t.Helper()
		failed := 0
		for i := range n {
			ws, codeNode, served, err := c.session(ctx, topic, c.token(topic, auth.ScopeRead))
			if err != nil {
				failed++
				t.Errorf("%s: session %d failed: %v", what, i, err)
				continue
			}
			ws.CloseNow()
			if served != codeNode {
				t.Errorf("%s: session %d: the code names %s, the websocket went to %s", what, i, codeNode, served)
			}
		}
		if failed > 0 {
			t.Fatalf("%s: %d of %d new sessions failed, want 0", what, failed, n)
		}
	}
	newSessions("after kill -9 of "+victim.id, cutOff+20)

	// The survivors still relay to each other.
	var survivors []reader
	for _, r := range readers {
		if r.node != victim.id {
			survivors = append(survivors, r)
		}
	}
	if writerNode == victim.id { // it reconnects like any client
		writer.CloseNow()
		if writer, _, _, err = c.session(ctx, topic, c.token(topic, auth.ScopeWrite)); err != nil {
			t.Fatal(err)
		}
	}
	if err := writer.Write(ctx, websocket.MessageText, []byte("after")); err != nil {
		t.Fatal(err)
	}
	for _, r := range survivors {
		if _, data, err := r.ws.Read(ctx); err != nil || string(data) != "after" {
			t.Fatalf("reader on %s after the kill: %q, %v", r.node, data, err)
		}
	}

	// SIGTERM another node while sessions keep starting: its lame-duck
	// period takes it out of rotation before it stops accepting.
	var leaving *clusterNode
	for _, n := range c.nodes {
		if n != victim {
			leaving = n
			break
		}
	}
	if err := leaving.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := false
	for i := 0; !done && i < 200; i++ {
		newSessions(fmt.Sprintf("while %s leaves (%d)", leaving.id, i), 1)
		select {
		case <-leaving.exited:
			done = true
		default:
		}
	}
	if !done {
		<-leaving.exited
	}
	newSessions("after "+leaving.id+" left", 10)
}

// TestClusterFlagsRefused: cluster flags that cannot work are refused
// before anything starts, with an error naming what to change.
func TestClusterFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster-listen", "127.0.0.1:0"}, "--database-url"},
		{[]string{"--nats-url", "nats://127.0.0.1:1"}, "--database-url"},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--nats-url", "nats://127.0.0.1:1", "--database-url", "postgres://x"}, "exclusive"},
		{[]string{"--cluster-peer", "127.0.0.1:1"}, "--cluster-listen"},
		{[]string{"--nats-url", "nats://127.0.0.1:1", "--cluster-peer", "127.0.0.1:1", "--database-url", "postgres://x"}, "--nats-url"},
	} {
		args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, tc.args...)
		_, err := run(t.Context(), nil, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// waitRouted waits until the load balancer sends n the handshakes of n's
// codes again (after a restart it needs two passed health checks).
func (c *testCluster) waitRouted(ctx context.Context, n *clusterNode) {
	c.t.Helper()
	probe := 0
	wait.Within(c.t, 30*time.Second, "the load balancer to route to "+n.id, func() bool {
		for ; ; probe++ { // a topic placed at n: a third of them
			topic := fmt.Sprintf("probe%d", probe)
			ws, codeNode, served, err := c.session(ctx, topic, c.token(topic, auth.ScopeRead))
			if err != nil {
				c.t.Fatalf("probe session: %v", err)
			}
			ws.CloseNow()
			if codeNode == n.id {
				probe++
				return served == n.id
			}
			if probe > 1000 {
				c.t.Fatalf("no topic of 1000 placed at %s", n.id)
			}
		}
	})
}

// direct opens a session on node n itself, as a client that knows the node
// would: the access request through the load balancer, the handshake at n
// (taking the code from its node over the bus when placement put it
// elsewhere).
func (c *testCluster) direct(ctx context.Context, n *clusterNode, topic, tok string) (*websocket.Conn, error) {
	uri, err := client.Access(ctx, c.lb, topic, tok, nil)
	if err != nil {
		return nil, fmt.Errorf("access: %w", err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, err
	}
	u.Host = n.addr
	ws, _, err := websocket.Dial(ctx, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("websocket at %s: %w", n.id, err)
	}
	ws.SetReadLimit(-1)
	return ws, nil
}

// TestClusterRollingRestart: the nodes are restarted one after the other
// (SIGTERM, then started again) while a writer on another node sends
// numbered messages without pause. Readers on the nodes that stay receive
// every message, in order, through each restart (the leaving and returning
// node's interest churns on the bus); readers on the restarted node get
// 1001 and come back through the load balancer; no new session fails.
func TestClusterRollingRestart(t *testing.T) {
	c := startTestCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	const topic = "lab/stream"
	for i, restarted := range c.nodes {
		writerNode := c.nodes[(i+1)%len(c.nodes)]
		writer, err := c.direct(ctx, writerNode, topic, c.token(topic, auth.ScopeWrite))
		if err != nil {
			t.Fatal(err)
		}
		// One reader on each node that stays, and one on the node restarted.
		type counted struct {
			node  string
			ws    *websocket.Conn
			last  atomic.Int64 // the last number read; -1 before the first
			stays bool
		}
		var readers []*counted
		for _, n := range c.nodes {
			ws, err := c.direct(ctx, n, topic, c.token(topic, auth.ScopeRead))
			if err != nil {
				t.Fatal(err)
			}
			r := &counted{node: n.id, ws: ws, stays: n != restarted}
			r.last.Store(-1)
			readers = append(readers, r)
		}
		// Every reader reads until the writer stops; readers on the nodes
		// that stay must see consecutive numbers from the first one they
		// read; the restarted node's reader must be closed with 1001.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, len(readers))
		for _, r := range readers {
			wg.Go(func() {
				for {
					_, data, err := r.ws.Read(ctx)
					if err != nil {
						select {
						case <-stop:
							return // the writer has stopped; this close is the test's
						default:
						}
						if !r.stays && websocket.CloseStatus(err) == websocket.StatusGoingAway {
							return
						}
						errs <- fmt.Errorf("restart of %s: reader on %s after message %d: %w", restarted.id, r.node, r.last.Load(), err)
						return
					}
					var n int
					if _, err := fmt.Sscanf(string(data), "m%d", &n); err != nil {
						errs <- fmt.Errorf("reader on %s: %q", r.node, data)
						return
					}
					if last := int(r.last.Load()); r.stays && last >= 0 && n != last+1 {
						errs <- fmt.Errorf("restart of %s: reader on %s read %d after %d: %d messages lost", restarted.id, r.node, n, last, n-last-1)
						return
					}
					r.last.Store(int64(n))
				}
			})
		}
		sent := 0
		send := func() {
			t.Helper()
			if err := writer.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "m%d", sent)); err != nil {
				t.Fatalf("restart of %s: writer on %s: %v", restarted.id, writerNode.id, err)
			}
			sent++
		}
		for range 20 {
			send()
		}
		if err := restarted.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// Traffic and new sessions go on while it leaves.
		for left := false; !left; {
			send()
			if sent%50 == 0 {
				// (It may be served elsewhere than its code's node while the
				// load balancer's view of the leaving node lags: the code is
				// then taken over the bus.)
				ws, _, _, err := c.session(ctx, topic, c.token(topic, auth.ScopeRead))
				if err != nil {
					t.Fatalf("restart of %s: a new session failed: %v", restarted.id, err)
				}
				ws.CloseNow()
			}
			select {
			case <-restarted.exited:
				left = true
			case <-ctx.Done():
				t.Fatal("the node did not leave")
			default:
			}
		}
		c.start(restarted)
		c.waitReady(restarted)
		c.waitRouted(ctx, restarted) // as an operator waits before the next node
		for range 20 {
			send()
		}
		// The readers that stay read everything sent.
		for _, r := range readers {
			if r.stays {
				wait.Within(t, 30*time.Second, "reader on "+r.node+" to read all "+fmt.Sprint(sent), func() bool {
					select {
					case err := <-errs:
						t.Fatal(err)
					default:
					}
					return r.last.Load() == int64(sent-1)
				})
			}
		}
		close(stop)
		writer.CloseNow()
		for _, r := range readers {
			r.ws.CloseNow()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("restart of %s: %d messages from %s, every one read on the nodes that stayed", restarted.id, sent, writerNode.id)
	}
}
