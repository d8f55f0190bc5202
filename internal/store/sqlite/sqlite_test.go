package sqlite

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/storetest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "switchboard.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

// TestPragmas checks the connection setup on both pools.
func TestPragmas(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := t.Context()
	for name, db := range map[string]*sql.DB{"write": s.write, "read": s.read} {
		for pragma, want := range map[string]string{
			"journal_mode": "wal",
			"synchronous":  "1", // NORMAL
			"foreign_keys": "1",
			"busy_timeout": "5000",
		} {
			var got string
			if err := db.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatalf("%s pool: PRAGMA %s: %v", name, pragma, err)
			}
			if got != want {
				t.Errorf("%s pool: %s = %s, want %s", name, pragma, got, want)
			}
		}
	}
	if _, err := s.read.ExecContext(ctx, `DELETE FROM audit`); err == nil {
		t.Error("the read pool accepted a write")
	}
	if got := s.write.Stats().MaxOpenConnections; got != 1 {
		t.Errorf("write pool allows %d connections, want 1", got)
	}
}

func TestOpenMissingDirectory(t *testing.T) {
	_, err := Open(t.Context(), filepath.Join(t.TempDir(), "missing", "switchboard.db"), Options{})
	if err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
	if !strings.Contains(err.Error(), "missing") {
		t.Errorf("error %q does not name the path", err)
	}
}

// TestPathNeedsNoEscaping: characters that mean something in a URI are
// part of the file name.
func TestPathNeedsNoEscaping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?x=1#y%20", "switchboard.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not created at %q: %v", path, err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switchboard.db")
	ctx := t.Context()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeSubject, Value: "eve"}, store.AuditEvent{Action: "revoke"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	rs, err := s.Revocations(ctx, "", time.Now())
	if err != nil || len(rs) != 1 || rs[0].Value != "eve" {
		t.Fatalf("after reopen: %+v, %v", rs, err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switchboard.db")
	ctx := t.Context()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.write.ExecContext(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, 1)`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	_, err = Open(ctx, path, Options{})
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open of a database from the future: %v, want ErrSchemaTooNew", err)
	}
	for _, want := range []string{"9999", fmt.Sprintf("up to %d", storetest.NewestMigration(t, migrations, "migrations")), "upgrade"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestBusyIsUnavailable: another process holding the write lock longer
// than the busy timeout makes writes fail with ErrUnavailable, and they
// work again once it lets go.
func TestBusyIsUnavailable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switchboard.db")
	ctx := t.Context()
	s, err := Open(ctx, path, Options{BusyTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := sql.Open("sqlite", dsn(path, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: "t"}, store.AuditEvent{Action: "revoke"})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Revoke while another connection holds the write lock: %v, want ErrUnavailable", err)
	}
	// Reads are not blocked by a writer in WAL mode.
	if _, err := s.Revocations(ctx, "", time.Now()); err != nil {
		t.Errorf("Revocations while another connection writes: %v", err)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: "t"}, store.AuditEvent{Action: "revoke"}); err != nil {
		t.Fatalf("Revoke after the lock was released: %v", err)
	}
}

// TestDurabilityAfterKill: every write the store acknowledged survives the
// process being killed with SIGKILL. The test re-executes its own binary as
// the child that writes.
func TestDurabilityAfterKill(t *testing.T) {
	if os.Getenv("STORE_CHILD") == "1" {
		durabilityChild(t, os.Getenv("STORE_CHILD_DB"))
		return
	}
	path := filepath.Join(t.TempDir(), "switchboard.db")
	// Create the schema here, so the child starts writing at once.
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestDurabilityAfterKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), "STORE_CHILD=1", "STORE_CHILD_DB="+path)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	acks := make(chan int)
	readDone := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
				i, err := strconv.Atoi(n)
				if err != nil {
					readDone <- fmt.Errorf("bad ack line %q", sc.Text())
					return
				}
				acks <- i
			}
		}
		readDone <- sc.Err()
	}()

	// Kill the child while it is writing, after a few acknowledgements.
	var acked []int
	deadline := time.After(60 * time.Second)
	for len(acked) < 200 {
		select {
		case i := <-acks:
			acked = append(acked, i)
		case err := <-readDone:
			t.Fatalf("child stopped after %d acks: %v", len(acked), err)
		case <-deadline:
			t.Fatalf("only %d acks from the child in 60s", len(acked))
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	// Acknowledgements already in the pipe count too.
	for drained := false; !drained; {
		select {
		case i := <-acks:
			acked = append(acked, i)
		case err := <-readDone:
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				t.Logf("reading child output: %v", err)
			}
			drained = true
		}
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v", err)
	}

	s, err = Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	rs, err := s.Revocations(t.Context(), store.RevokeToken, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stored := make(map[string]bool, len(rs))
	for _, r := range rs {
		stored[r.Value] = true
	}
	audited := make(map[string]bool)
	var after int64
	for {
		evs, err := s.Audit(t.Context(), after, time.Time{}, store.MaxAuditLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			audited[e.Target] = true
		}
		after = evs[len(evs)-1].ID
	}
	for _, i := range acked {
		v := fmt.Sprintf("tok-%d", i)
		if !stored[v] {
			t.Errorf("acknowledged revocation %s lost", v)
		}
		if !audited["token:"+v] {
			t.Errorf("acknowledged audit event for %s lost", v)
		}
	}
	t.Logf("%d acknowledged writes, %d found after SIGKILL", len(acked), len(rs))
}

// durabilityChild writes audited revocations until it is killed, printing
// "ack N" after each one is acknowledged.
func durabilityChild(t *testing.T, path string) {
	ctx := context.Background()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1_000_000; i++ {
		v := fmt.Sprintf("tok-%d", i)
		_, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: v},
			store.AuditEvent{Action: "revoke", Target: "token:" + v})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(os.Stdout, "ack %d\n", i); err != nil {
			return
		}
	}
}

// TestDatabaseFileIsPrivate: the database (revocations, audit events,
// dashboard sessions) and its WAL are created 0600 even in a directory
// anyone may read, and whatever the umask lets through.
func TestDatabaseFileIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "switchboard.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", filepath.Base(p), mode)
		}
	}
}
