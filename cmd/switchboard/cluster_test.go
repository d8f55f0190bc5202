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
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"switchboard/internal/auth"
	"switchboard/internal/servertest"
	"switchboard/internal/servertest/wait"
	"switchboard/internal/store/pgtest"
	"switchboard/pkg/client"
	"switchboard/pkg/wire"
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
			"--max-requests-per-address", "100000", "--drain-window", "1s"} // the cluster's default lame duck (3 s)
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
