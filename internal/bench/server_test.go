package bench

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
)

// childEnv makes the test binary act as `switchboard serve` (the subset
// StartServer uses), so StartServer can be tested without building the
// command.
const childEnv = "BENCH_TEST_FAKE_SERVE" // not SWITCHBOARD_*: StartServer drops those

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(fakeServe(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeServe(args []string) int {
	var listen, dir string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--listen":
			listen = args[i+1]
		case "--data-dir":
			dir = args[i+1]
		}
	}
	if len(args) == 0 || args[0] != "serve" || listen == "" || dir == "" {
		fmt.Fprintln(os.Stderr, "fake serve: unexpected arguments", args)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	secret, err := datadir.LoadOrCreateSecret(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	db, err := sqlite.Open(ctx, filepath.Join(dir, "switchboard.db"), sqlite.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	srv, err := server.New(server.Config{Listen: listen, Secret: secret, NodeID: "n1", Limits: loadGeneratorLimits}, server.Deps{Store: db})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := datadir.WritePublicURL(dir, srv.PublicURL()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	<-ctx.Done()
	if err := srv.Shutdown(context.Background()); err != nil {
		return 1
	}
	return 0
}

func TestStartServerAndFanout(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(childEnv, "1") // inherited by the child
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := StartServer(ctx, exe, nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if err := CheckLoopbackURL(srv.URL); err != nil || len(srv.Secret) == 0 || srv.PID <= 0 {
		t.Fatalf("server %+v: %v", srv, err)
	}
	res, err := Fanout(ctx, FanoutOptions{
		URL: srv.URL, Secret: srv.Secret, Readers: 2, Size: 32, Rate: 500,
		Duration: 100 * time.Millisecond, Warmup: -1, ServerPID: srv.PID,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 2*res.Sent || res.Sent == 0 {
		t.Errorf("sent %d delivered %d", res.Sent, res.Delivered)
	}
	if res.ServerCPUSec == nil || res.ServerPeakRSSBytes == nil || *res.ServerPeakRSSBytes <= 0 {
		t.Errorf("server CPU %v, peak RSS %v: want both", res.ServerCPUSec, res.ServerPeakRSSBytes)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if _, err := os.Stat(srv.Dir); !os.IsNotExist(err) {
		t.Errorf("data dir %s still there after Stop: %v", srv.Dir, err)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

func TestStartServerChildFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// /bin/false exits at once without listening.
	_, err := StartServer(ctx, "/bin/false", nil, os.Stderr)
	if err == nil {
		t.Fatal("want an error from a server that exits")
	}
}
