package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// unavailableBlobs is a result store whose database is down: every Put
// fails as the PostgreSQL store's does then.
type unavailableBlobs struct{ blob.Store }

func (unavailableBlobs) Put(context.Context, string, io.Reader, int64, func(blob.Info) error) (blob.Info, error) {
	return blob.Info{}, fmt.Errorf("blobs: begin: %w", store.ErrUnavailable)
}

// TestUploadWhileTheDatabaseIsDown: an agent's upload while the result
// store's database is down is answered 503 store_unavailable (retry later),
// not 507 as if the hub's disk were full.
func TestUploadWhileTheDatabaseIsDown(t *testing.T) {
	dir, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(c *Config, d *Deps) { d.Results = unavailableBlobs{dir} })
	_, id, _ := runJobOnC1(t, s)
	data := []byte("metrics,1\n")
	status, code, hdr := do(t, s.uploadRequest(id, "out.csv", data, bytes.NewReader(data)))
	if status != http.StatusServiceUnavailable || code != "store_unavailable" || hdr.Get("Retry-After") == "" {
		t.Fatalf("upload with the database down: %d %s (Retry-After %q), want 503 store_unavailable with Retry-After", status, code, hdr.Get("Retry-After"))
	}
}
