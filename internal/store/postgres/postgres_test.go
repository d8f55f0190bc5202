package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
	"github.com/switchboard-hub/switchboard/internal/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func openURL(t *testing.T, url string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openURL(t, pgtest.Start(t)) })
}

func TestReopenKeepsData(t *testing.T) {
	url := pgtest.Start(t)
	ctx := t.Context()
	s := openURL(t, url)
	if _, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeSubject, Value: "eve"}, store.AuditEvent{Action: "revoke"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openURL(t, url)
	defer s.Close()
	rs, err := s.Revocations(ctx, "", time.Now())
	if err != nil || len(rs) != 1 || rs[0].Value != "eve" {
		t.Fatalf("after reopen: %+v, %v", rs, err)
	}
}

// TestConcurrentOpen: nodes starting together migrate once.
func TestConcurrentOpen(t *testing.T) {
	url := pgtest.Start(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := Open(t.Context(), url, Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestSchemaTooNew(t *testing.T) {
	url := pgtest.Start(t)
	ctx := t.Context()
	s := openURL(t, url)
	if _, err := s.pool.Exec(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, true)`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	_, err := Open(ctx, url, Options{})
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open of a database from the future: %v, want ErrSchemaTooNew", err)
	}
	if errors.Is(err, store.ErrUnavailable) {
		t.Errorf("schema too new reported as unavailable: %v", err)
	}
	for _, want := range []string{"9999", fmt.Sprintf("up to %d", storetest.NewestMigration(t, migrations, "migrations")), "upgrade"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestOpenUnreachable: nothing listens on the port.
func TestOpenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	_, err = Open(t.Context(), "postgres://postgres@127.0.0.1:"+strconv.Itoa(port)+"/x?sslmode=disable", Options{})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open of an unreachable server: %v, want ErrUnavailable", err)
	}
}

// TestOpenTimeout: a server that accepts connections but never answers
// makes Open fail with ErrUnavailable when the connect timeout passes.
func TestOpenTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			go io.Copy(io.Discard, c)
		}
	}()
	_, err = Open(t.Context(), "postgres://postgres@"+l.Addr().String()+"/x?sslmode=disable", Options{ConnectTimeout: 200 * time.Millisecond})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open of a silent server: %v, want ErrUnavailable", err)
	}
}

// TestDataErrorIsNotUnavailable: an error the server reports about the
// data (here: a NUL byte, which text columns refuse) is not
// ErrUnavailable, and the transaction leaves nothing behind.
func TestDataErrorIsNotUnavailable(t *testing.T) {
	s := openURL(t, pgtest.Start(t))
	defer s.Close()
	ctx := t.Context()
	_, err := s.Revoke(ctx, store.Revocation{Kind: store.RevokeToken, Value: "ok"}, store.AuditEvent{Action: "revoke", Detail: "a\x00b"})
	if err == nil {
		t.Fatal("Revoke with a NUL byte in the audit event succeeded")
	}
	if errors.Is(err, store.ErrUnavailable) {
		t.Errorf("data error reported as unavailable: %v", err)
	}
	if rs, err := s.Revocations(ctx, "", time.Now()); err != nil || len(rs) != 0 {
		t.Errorf("failed Revoke left revocations %+v (%v)", rs, err)
	}
}

func TestUnavailableClassification(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "57P01"}, true},  // admin shutdown
		{&pgconn.PgError{Code: "57P03"}, true},  // cannot connect now
		{&pgconn.PgError{Code: "08006"}, true},  // connection failure
		{&pgconn.PgError{Code: "53300"}, true},  // too many connections
		{&pgconn.PgError{Code: "23505"}, false}, // unique violation
		{&pgconn.PgError{Code: "23514"}, false}, // check violation
		{&pgconn.PgError{Code: "22021"}, false}, // bad encoding
		{&pgconn.PgError{Code: "40001"}, false}, // serialization failure
		{fmt.Errorf("x: %w", &pgconn.PgError{Code: "57014"}), false},
		{io.ErrUnexpectedEOF, true},
		{fmt.Errorf("read: %w", io.EOF), true},
		{context.DeadlineExceeded, true},
		{context.Canceled, false},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, true},
		{errors.New("cannot scan"), false},
	} {
		if got := unavailable(c.err); got != c.want {
			t.Errorf("unavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestServerStopped: while the server is down every operation fails with
// ErrUnavailable, changing nothing; after it restarts the same Store works
// again and the data is intact.
func TestServerStopped(t *testing.T) {
	c := pgtest.StartCluster(t)
	s := openURL(t, c.URL())
	defer s.Close()
	ctx := t.Context()
	before := store.Revocation{Kind: store.RevokeBooking, Value: "before"}
	if _, err := s.Revoke(ctx, before, store.AuditEvent{Action: "revoke"}); err != nil {
		t.Fatal(err)
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"Revoke", func() error {
			_, err := s.Revoke(octx, store.Revocation{Kind: store.RevokeToken, Value: "during"}, store.AuditEvent{Action: "revoke"})
			return err
		}},
		{"Unrevoke", func() error {
			_, _, err := s.Unrevoke(octx, store.RevokeBooking, "before", nil, store.AuditEvent{Action: "unrevoke"})
			return err
		}},
		{"Revocations", func() error { _, err := s.Revocations(octx, "", time.Now()); return err }},
		{"Allowances", func() error { _, err := s.Allowances(octx, time.Now()); return err }},
		{"PurgeExpired", func() error { _, err := s.PurgeExpired(octx, time.Now()); return err }},
		{"AppendAudit", func() error { _, err := s.AppendAudit(octx, store.AuditEvent{Action: "x"}); return err }},
		{"Audit", func() error { _, err := s.Audit(octx, 0, time.Time{}, 0); return err }},
		{"Ping", func() error { return s.Ping(octx) }},
		{"CreateJob", func() error {
			return s.CreateJob(octx, store.Job{ID: "during", Phase: store.PhasePending})
		}},
		{"Job", func() error { _, err := s.Job(octx, "j"); return err }},
		{"Jobs", func() error { _, err := s.Jobs(octx, store.JobFilter{}); return err }},
		{"UpdateJob", func() error {
			_, err := s.UpdateJob(octx, "j", func(j *store.Job) error { return nil })
			return err
		}},
		{"DeleteJob", func() error { return s.DeleteJob(octx, "j") }},
		{"ActiveJobs", func() error { _, err := s.ActiveJobs(octx); return err }},
		{"PutRun", func() error { return s.PutRun(octx, store.Run{JobID: "j", AgentID: "a"}) }},
		{"Runs", func() error { _, err := s.Runs(octx, "j"); return err }},
		{"ClearResults", func() error { _, err := s.ClearResults(octx, "j"); return err }},
		{"PutAgent", func() error { return s.PutAgent(octx, store.Agent{ID: "a"}) }},
		{"Agents", func() error { _, err := s.Agents(octx); return err }},
		{"DisconnectAgents", func() error { return s.DisconnectAgents(octx, "n1", time.Now()) }},
		{"DeleteAgent", func() error {
			return s.DeleteAgent(octx, "a", store.AuditEvent{Actor: "admin", Action: "agent.forget", Target: "agent:a"})
		}},
	}
	// Twice: the first round meets pooled connections the server closed,
	// the second has to dial.
	for round := 1; round <= 2; round++ {
		for _, c := range calls {
			err := c.call()
			t.Logf("round %d: %s: %v", round, c.name, err)
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("round %d: %s with the server stopped: %v, want ErrUnavailable", round, c.name, err)
			}
		}
	}
	if _, err := Open(octx, c.URL(), Options{}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open with the server stopped: %v, want ErrUnavailable", err)
	}

	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// The pool reconnects by itself; poll until it does.
	var pingErr error
	defer func() {
		if pingErr != nil {
			t.Logf("the last ping: %v", pingErr)
		}
	}()
	wait.Within(t, 30*time.Second, "the store to answer after the server restarted", func() bool {
		pingErr = s.Ping(ctx)
		return pingErr == nil
	})
	after := store.Revocation{Kind: store.RevokeBooking, Value: "after"}
	if _, err := s.Revoke(ctx, after, store.AuditEvent{Action: "revoke"}); err != nil {
		t.Fatalf("Revoke after restart: %v", err)
	}
	rs, err := s.Revocations(ctx, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, r.Value)
	}
	if strings.Join(got, ",") != "before,after" {
		t.Errorf("after restart: revocations %v, want [before after]", got)
	}
	evs, err := s.Audit(ctx, 0, time.Time{}, 0)
	if err != nil || len(evs) != 2 {
		t.Errorf("after restart: %d audit events (%v), want 2", len(evs), err)
	}
}

// TestAuditIDsCommitOrder: with many concurrent writers, a reader tailing
// the log with afterID sees every event exactly once.
func TestAuditIDsCommitOrder(t *testing.T) {
	s := openURL(t, pgtest.Start(t))
	defer s.Close()
	ctx := t.Context()
	const writers, each = 6, 50
	done := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range each {
				if _, err := s.AppendAudit(ctx, store.AuditEvent{Action: "w", Target: fmt.Sprintf("%d-%d", w, i)}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	seen := make(map[string]int)
	var after int64
	finished := 0
	deadline := time.Now().Add(time.Minute)
	for finished < writers || after == 0 || len(seen) < writers*each {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished++
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tailing saw %d of %d events", len(seen), writers*each)
		}
		evs, err := s.Audit(ctx, after, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			seen[e.Target]++
			after = e.ID
		}
		if finished == writers && len(evs) == 0 {
			break
		}
	}
	if len(seen) != writers*each {
		t.Errorf("tailing saw %d distinct events, want %d", len(seen), writers*each)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("event %s seen %d times", k, n)
		}
	}
}

// TestPgtestDatabasesAreFresh: each Start gives an empty database.
func TestPgtestDatabasesAreFresh(t *testing.T) {
	a, b := pgtest.Start(t), pgtest.Start(t)
	if a == b {
		t.Fatalf("two Start calls returned the same database %s", a)
	}
	conn, err := pgx.Connect(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("fresh database has %d tables (%v)", n, err)
	}
}
