package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// This package has no TestMain on purpose: it checks the fallback that
// stops the shared cluster when the last test using it ends.

func query(t *testing.T, url string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

func TestSharedClusterStoppedWithoutMain(t *testing.T) {
	if os.Getenv(EnvURL) != "" {
		t.Skip(EnvURL + " is set: no cluster of our own")
	}
	var dir string
	t.Run("user", func(t *testing.T) {
		url := Start(t)
		if err := query(t, url); err != nil {
			t.Fatal(err)
		}
		shared.mu.Lock()
		dir = shared.c.Dir()
		shared.mu.Unlock()
		t.Run("nested", func(t *testing.T) {
			if err := query(t, Start(t)); err != nil {
				t.Fatal(err)
			}
		})
		shared.mu.Lock()
		still := shared.c != nil
		shared.mu.Unlock()
		if !still {
			t.Fatal("cluster stopped while a test still uses it")
		}
	})
	shared.mu.Lock()
	c := shared.c
	shared.mu.Unlock()
	if c != nil {
		t.Error("shared cluster still running after its last user ended")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster directory %s not removed: %v", dir, err)
	}
}

func TestClusterStopStart(t *testing.T) {
	c := StartCluster(t)
	if err := query(t, c.URL()); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := query(t, c.URL()); err == nil {
		t.Fatal("query succeeded with the server stopped")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := query(t, c.URL()); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	db := c.NewDatabase(t)
	if err := query(t, db); err != nil {
		t.Fatal(err)
	}
}
