package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store/pgtemp"
)

// Bounds of StartCluster.
const (
	// DefaultClusterNodes is the size of the cluster `bench cluster` runs.
	DefaultClusterNodes = 3
	// ClusterReadyTimeout bounds the wait for every node's /readyz: the
	// membership settles in about 2 s, and routes to peers that were not
	// listening yet are retried after 1 s.
	ClusterReadyTimeout = 60 * time.Second
	// readyPoll is how often /readyz is asked while a node joins.
	readyPoll = 20 * time.Millisecond
)

// ClusterNode is one node of a cluster as the cluster scenarios see it.
type ClusterNode struct {
	// ID is the node's --node-id, the suffix of the codes it issues.
	ID string
	// URL is the node's own base URL (http://127.0.0.1:PORT).
	URL string
	// Audience is the audience of the tokens the node accepts: the
	// cluster's shared --public-url (behind a load balancer, its URL), or
	// the node's own URL when each node is its own audience.
	Audience string
	// PID, if positive, is the node's process id, for CPU time and memory.
	PID int
}

// ClusterTarget is a running cluster: its nodes (the first is "node A",
// where writers and API calls go) and the token secret they share.
type ClusterTarget struct {
	Nodes  []ClusterNode
	Secret []byte
}

func (t *ClusterTarget) check(minNodes int) error {
	if len(t.Nodes) < minNodes {
		return fmt.Errorf("bench: cluster of %d nodes: want at least %d", len(t.Nodes), minNodes)
	}
	if len(t.Secret) == 0 {
		return errors.New("bench: the cluster's token secret is needed")
	}
	for _, n := range t.Nodes {
		if err := CheckLoopbackURL(n.URL); err != nil {
			return err
		}
		if n.Audience == "" || n.ID == "" {
			return fmt.Errorf("bench: node %s: audience and id are needed", n.URL)
		}
	}
	return nil
}

// onNode returns the websocket URI uri (as an access endpoint returned it:
// its host is the public URL's) with the host of node's URL, so that the
// GET goes to that node without a load balancer.
func onNode(uri string, node ClusterNode) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("bench: access returned an unparsable URI")
	}
	n, err := url.Parse(node.URL)
	if err != nil {
		return "", fmt.Errorf("bench: node URL %q: %w", node.URL, err)
	}
	u.Host = n.Host
	return u.String(), nil
}

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Binary is the switchboard executable whose `serve` runs each node.
	Binary string
	// Nodes is the number of nodes (default 3).
	Nodes int
	// DatabaseURL is the PostgreSQL database the nodes share. Empty: a
	// throwaway PostgreSQL cluster is started in a temporary directory
	// (package pgtemp) and removed by Stop.
	DatabaseURL string
	// ExtraArgs are appended to every node's command line.
	ExtraArgs []string
	// Stderr receives the nodes' output (and PostgreSQL's errors).
	Stderr io.Writer
}

// Cluster is a cluster of `switchboard serve` child processes on loopback:
// each with its own HTTP and route ports, node id (n1, n2, …) and data
// directory; all with one --secret-file, one --public-url (a reserved
// loopback port nobody listens on, standing for the load balancer: the
// tokens' audience) and one PostgreSQL. Each node's embedded nats-server
// routes to every node's route listener.
type Cluster struct {
	Target ClusterTarget
	// PublicURL is the shared --public-url.
	PublicURL string
	// DatabaseURL is the database the nodes use; TempDatabase reports
	// whether StartCluster started it.
	DatabaseURL  string
	TempDatabase bool

	dir   string // secret file and the nodes' data directories
	nodes []*ChildServer
	pg    *pgtemp.Cluster
}

// StartCluster starts the cluster and waits (bounded by
// ClusterReadyTimeout and ctx) until every node's /readyz answers 200:
// it has joined the cluster. The caller must call Stop.
func StartCluster(ctx context.Context, o ClusterOptions) (c *Cluster, err error) {
	if o.Nodes == 0 {
		o.Nodes = DefaultClusterNodes
	}
	if o.Nodes < 1 {
		return nil, fmt.Errorf("bench: cluster of %d nodes", o.Nodes)
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	c = &Cluster{DatabaseURL: o.DatabaseURL}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.dir, err = os.MkdirTemp("", "switchboard-bench-cluster-*"); err != nil {
		return c, fmt.Errorf("bench: start cluster: %w", err)
	}
	if c.DatabaseURL == "" {
		if c.pg, err = pgtemp.New(); err != nil {
			return c, fmt.Errorf("bench: no --database-url, and a PostgreSQL of our own cannot start: %w", err)
		}
		c.DatabaseURL, c.TempDatabase = c.pg.URL(), true
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	c.Target.Secret = []byte(hex.EncodeToString(secret))
	secretFile := filepath.Join(c.dir, "secret")
	if err := os.WriteFile(secretFile, c.Target.Secret, 0o600); err != nil {
		return c, fmt.Errorf("bench: start cluster: %w", err)
	}

	// The nodes must know each other's route ports before any runs:
	// reserve ports by listening, then free them for the nodes. (Another
	// process may take one meanwhile; the node then fails to start, and
	// so does the bench, with the node's error on Stderr.)
	ports, err := freePorts(1 + 2*o.Nodes)
	if err != nil {
		return c, err
	}
	c.PublicURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	routes := make([]string, o.Nodes)
	for i := range routes {
		routes[i] = "127.0.0.1:" + strconv.Itoa(ports[1+o.Nodes+i])
	}
	for i := range o.Nodes {
		id := "n" + strconv.Itoa(i+1)
		listen := "127.0.0.1:" + strconv.Itoa(ports[1+i])
		dataDir := filepath.Join(c.dir, id)
		if err := os.Mkdir(dataDir, 0o700); err != nil {
			return c, fmt.Errorf("bench: start cluster: %w", err)
		}
		args := []string{"serve", "--listen", listen, "--node-id", id, "--data-dir", dataDir, "--public-url", c.PublicURL,
			"--secret-file", secretFile, "--database-url", c.DatabaseURL, "--log-level", "warn",
			"--cluster-listen", routes[i], "--cluster-peer", strings.Join(routes, ","),
			// No load balancer watches /readyz and the measurement is over
			// when the bench stops the nodes: no lame duck, no drain.
			"--lame-duck", "0s", "--drain-window", "0s"}
		args = append(append(args, loadGeneratorArgs...), o.ExtraArgs...)
		s, err := startChild(o.Binary, dataDir, args, o.Stderr)
		if err != nil {
			return c, fmt.Errorf("bench: start node %s: %w", id, err)
		}
		s.URL, s.Secret = "http://"+listen, c.Target.Secret
		c.nodes = append(c.nodes, s)
		c.Target.Nodes = append(c.Target.Nodes, ClusterNode{ID: id, URL: s.URL, Audience: c.PublicURL, PID: s.PID})
	}
	for i, s := range c.nodes {
		if err := waitReady(ctx, s, ClusterReadyTimeout); err != nil {
			return c, fmt.Errorf("bench: node %s: %w", c.Target.Nodes[i].ID, err)
		}
	}
	return c, nil
}

// Kill kills node i (SIGKILL) and waits for it to exit.
func (c *Cluster) Kill(i int) error {
	s := c.nodes[i]
	if err := s.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("bench: kill node %s: %w", c.Target.Nodes[i].ID, err)
	}
	<-s.exited
	return nil
}

// Stop stops every node (SIGTERM, in parallel: a node in a cluster keeps
// serving for its lame-duck period first), then the PostgreSQL it started,
// and removes the temporary files.
func (c *Cluster) Stop() error {
	errs := make([]error, len(c.nodes))
	done := make(chan int, len(c.nodes))
	for i, s := range c.nodes {
		go func() { errs[i] = s.Stop(); done <- i }()
	}
	for range c.nodes {
		<-done
	}
	for i, err := range errs {
		// A node killed on purpose exited with "signal: killed".
		if err != nil && !strings.Contains(err.Error(), "signal: killed") {
			errs[i] = err
		} else {
			errs[i] = nil
		}
	}
	if c.pg != nil {
		errs = append(errs, c.pg.Destroy())
	}
	if c.dir != "" {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}

// startChild starts binary with args as a ChildServer whose data directory
// is dir (removed by Stop), with StartServer's environment and parent-death
// signal. It does not wait for anything.
func startChild(binary, dir string, args []string, stderr io.Writer) (*ChildServer, error) {
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &ChildServer{PID: cmd.Process.Pid, Dir: dir, cmd: cmd, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

// waitReady polls s's /readyz until it answers 200, s exits, timeout
// passes or ctx ends.
func waitReady(ctx context.Context, s *ChildServer, timeout time.Duration) error {
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	last := "no answer"
	for {
		resp, err := hc.Get(s.URL + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		select {
		case <-tick.C:
		case <-s.exited:
			return fmt.Errorf("exited before it was ready: %v", s.waitErr)
		case <-deadline.C:
			return fmt.Errorf("not ready within %v (last /readyz: %s)", timeout, last)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// freePorts reserves n loopback ports by listening on them, then frees them.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: reserve a port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// clusterCPU is the CPU time of the cluster's node processes (and this
// process) sampled at the start and end of a measurement.
type clusterCPU struct {
	ids   []string
	pids  []int
	nodes []time.Duration
	self  time.Duration
	t0    time.Time
}

func startClusterCPU(t *ClusterTarget) *clusterCPU {
	c := &clusterCPU{t0: time.Now()}
	c.self, _ = ProcCPU(os.Getpid())
	for _, n := range t.Nodes {
		c.ids = append(c.ids, n.ID)
		c.pids = append(c.pids, n.PID)
		var d time.Duration
		if n.PID > 0 {
			d, _ = ProcCPU(n.PID)
		}
		c.nodes = append(c.nodes, d)
	}
	return c
}

// ClusterCPU is the CPU time used during a measurement.
type ClusterCPU struct {
	WallSec   float64 `json:"wall_sec"`
	ClientSec float64 `json:"client_sec"`
	// NodeSec and NodePeakRSSBytes are per node (Nodes: their ids), in
	// the target's order; absent when the nodes' process ids are unknown.
	Nodes            []string  `json:"nodes,omitempty"`
	NodeSec          []float64 `json:"node_sec,omitempty"`
	NodePeakRSSBytes []int64   `json:"node_peak_rss_bytes,omitempty"`
}

func (c *clusterCPU) stop() ClusterCPU {
	r := ClusterCPU{WallSec: time.Since(c.t0).Seconds()}
	self, _ := ProcCPU(os.Getpid())
	r.ClientSec = (self - c.self).Seconds()
	for i, pid := range c.pids {
		if pid <= 0 {
			return ClusterCPU{WallSec: r.WallSec, ClientSec: r.ClientSec}
		}
		d, err := ProcCPU(pid)
		if err != nil { // the node is gone (the kill scenario)
			d = c.nodes[i]
		}
		r.Nodes = append(r.Nodes, c.ids[i])
		r.NodeSec = append(r.NodeSec, (d - c.nodes[i]).Seconds())
		rss, _ := ProcPeakRSS(pid)
		r.NodePeakRSSBytes = append(r.NodePeakRSSBytes, rss)
	}
	return r
}

// writeRows writes the CPU rows of a report.
func (c ClusterCPU) writeRows(row func(k, format string, args ...any)) {
	row("client CPU", "%.2f s over %.2f s (%.0f%% of one core)", c.ClientSec, c.WallSec, 100*c.ClientSec/c.WallSec)
	for i, s := range c.NodeSec {
		if c.NodePeakRSSBytes[i] == 0 {
			row("node "+c.Nodes[i]+" CPU", "gone by the end (killed)")
			continue
		}
		row("node "+c.Nodes[i]+" CPU", "%.2f s (%.0f%% of one core); peak RSS %.1f MiB", s, 100*s/c.WallSec, float64(c.NodePeakRSSBytes[i])/(1<<20))
	}
}
