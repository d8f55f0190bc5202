package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
	"github.com/switchboard-hub/switchboard/internal/store/postgres"
)

// TestResultsStoreChoice: in a cluster result files go to PostgreSQL
// unless --results-dir names a (shared) directory; a node alone keeps
// them in a directory, <data-dir>/results by default, whatever its store.
func TestResultsStoreChoice(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	db, err := postgres.Open(ctx, pgtest.Start(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log := slog.New(slog.DiscardHandler)
	dataDir, shared := t.TempDir(), t.TempDir()
	inCluster := clusterFlags{listen: "127.0.0.1:0"}
	withDataDir := secretFlags{dataDir: dataDir}
	for _, tc := range []struct {
		name    string
		flags   serveFlags
		wantDir string // "": PostgreSQL
	}{
		{"cluster", serveFlags{secretFlags: withDataDir, cluster: inCluster}, ""},
		{"cluster, external NATS", serveFlags{secretFlags: withDataDir, cluster: clusterFlags{natsURL: "nats://127.0.0.1:4222"}}, ""},
		{"cluster with --results-dir", serveFlags{secretFlags: withDataDir, cluster: inCluster, resultsDir: shared}, shared},
		{"alone on PostgreSQL", serveFlags{secretFlags: withDataDir}, filepath.Join(dataDir, "results")},
		{"alone with --results-dir", serveFlags{secretFlags: withDataDir, resultsDir: shared}, shared},
	} {
		results, err := openResults(&tc.flags, db, log)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		switch r := results.(type) {
		case *postgres.Blobs:
			if tc.wantDir != "" {
				t.Errorf("%s: results in PostgreSQL, want the directory %s", tc.name, tc.wantDir)
			}
		case *blob.Dir:
			if r.Root() != tc.wantDir {
				t.Errorf("%s: results in the directory %s, want %q (empty: PostgreSQL)", tc.name, r.Root(), tc.wantDir)
			}
		default:
			t.Errorf("%s: results in a %T", tc.name, results)
		}
	}
}
