// Package pgtemp runs a throwaway PostgreSQL cluster: initdb and pg_ctl into
// a temporary directory, listening on a free loopback port and a unix socket
// in that directory, with trust authentication for the superuser
// "postgres", tuned for speed over durability (fsync off). It is what
// pgtest gives tests and what `switchboard bench cluster` starts when it is
// given no --database-url; it does not import package testing.
//
// The binaries are looked up on PATH, then under /usr/lib/postgresql/*/bin
// (Debian). initdb and postgres refuse to run as root, so when the caller is
// root they run as the "postgres" user.
package pgtemp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrMissing marks errors meaning PostgreSQL is not installed or cannot be
// run here (as opposed to a failure of an installed PostgreSQL).
var ErrMissing = errors.New("pgtemp: PostgreSQL cannot run here")

// Cluster is a PostgreSQL cluster in a temporary directory, listening on
// 127.0.0.1 and a unix socket in that directory, with trust
// authentication for the superuser "postgres".
type Cluster struct {
	bin  string // directory holding initdb, pg_ctl and postgres
	dir  string // temporary directory, owned by the user postgres runs as
	port int
	cred *syscall.Credential // nil: run as ourselves

	mu      sync.Mutex
	running bool
}

// Dir is the cluster's directory (data, socket and log), removed by Destroy.
func (c *Cluster) Dir() string { return c.dir }

// URL returns the URL of the cluster's "postgres" database.
func (c *Cluster) URL() string { return c.url("postgres") }

func (c *Cluster) url(db string) string {
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path: "/" + db, RawQuery: "sslmode=disable"}).String()
}

// Stop stops the server (fast shutdown: sessions are ended with 57P01).
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	if out, err := c.pgctl("stop", "-m", "fast"); err != nil {
		return fmt.Errorf("pgtemp: pg_ctl stop: %w\n%s", err, out)
	}
	c.running = false
	return nil
}

// Start starts the server again, on the same port.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return nil
	}
	if err := c.start(); err != nil {
		return err
	}
	c.running = true
	return nil
}

func (c *Cluster) start() error {
	// pg_ctl hands -o to a shell; the directory name is ours (no quotes).
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories='%s' "+
		"-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300", c.port, c.dir)
	if out, err := c.pgctl("start", "-o", opts, "-l", filepath.Join(c.dir, "postgres.log")); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
		return fmt.Errorf("pgtemp: pg_ctl start on port %d: %w\n%s\n%s", c.port, err, out, tail(log, 2000))
	}
	return nil
}

// pgctl runs pg_ctl mode with the given options, waiting for it to finish.
func (c *Cluster) pgctl(mode string, opts ...string) ([]byte, error) {
	args := append([]string{"-D", filepath.Join(c.dir, "data"), "-w", "-t", "60"}, opts...)
	return c.run(filepath.Join(c.bin, "pg_ctl"), append(args, mode)...)
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir // initdb fails if it cannot read the working directory
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd.CombinedOutput()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

const dirPrefix = "switchboard-pgtest-"

// New runs initdb in a new temporary directory and starts the server on a
// free loopback port. It first stops and removes clusters left behind by
// processes that died without calling Destroy. The caller must call
// Destroy. An error wrapping ErrMissing means PostgreSQL cannot run here.
func New() (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		if c.cred, err = postgresUser(); err != nil {
			return nil, err
		}
	}
	reapOrphans(bin)
	// Not a test's TempDir: its parent is private to root, and the server
	// may run as another user.
	if c.dir, err = os.MkdirTemp("", dirPrefix); err != nil {
		return nil, fmt.Errorf("pgtemp: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(c.dir)
		return nil, fmt.Errorf("pgtemp: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			os.RemoveAll(c.dir)
			return nil, fmt.Errorf("pgtemp: %w", err)
		}
	}
	if out, err := c.run(filepath.Join(bin, "initdb"), "-D", filepath.Join(c.dir, "data"), "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"); err != nil {
		os.RemoveAll(c.dir)
		return nil, fmt.Errorf("pgtemp: initdb: %w\n%s", err, out)
	}
	// Pick a free port; another process may take it before the server
	// binds, so try a few.
	for attempt := 1; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			break
		}
		if err = c.start(); err == nil {
			c.running = true
			return c, nil
		}
		if attempt == 5 {
			break
		}
	}
	os.RemoveAll(c.dir)
	return nil, err
}

// Destroy stops the server without waiting for a checkpoint and removes
// its directory.
func (c *Cluster) Destroy() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	if c.running {
		if out, e := c.pgctl("stop", "-m", "immediate"); e != nil {
			err = fmt.Errorf("pgtemp: pg_ctl stop: %w\n%s", e, out)
		}
		c.running = false
	}
	return errors.Join(err, os.RemoveAll(c.dir))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtemp: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// findBin returns the directory holding initdb and pg_ctl: the one of
// initdb on PATH, or the newest /usr/lib/postgresql/*/bin.
func findBin() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// Debian links some binaries into PATH; the server must come from
		// the same installation as initdb.
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w: no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under /usr/lib/postgresql/*/bin; "+
		"install them (Debian: apt-get install postgresql)", ErrMissing)
}

// version reads 15 from /usr/lib/postgresql/15/bin.
func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// postgresUser returns the credentials of the "postgres" user, which the
// server runs as when the tests run as root.
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: running as root, and PostgreSQL refuses to run as root, but there is no \"postgres\" user to run it as (%v); "+
			"create one (useradd --system --user-group postgres) or run as another user", ErrMissing, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgtemp: user postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// reapOrphans stops clusters left behind by test binaries that died
// without cleaning up (a panic, a timeout, SIGKILL).
func reapOrphans(bin string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() || alive(pid) {
			continue // its owner may still be running
		}
		c := &Cluster{bin: bin, dir: dir}
		if fi, err := os.Stat(dir); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && st.Uid != 0 {
				c.cred = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
			}
		}
		c.pgctl("stop", "-m", "immediate")
		os.RemoveAll(dir)
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !os.IsNotExist(err)
	}
	// pid (comm) state ...: comm may contain spaces and parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}
