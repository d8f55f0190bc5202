package blob_test

import (
	"path/filepath"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/blob/blobtest"
)

func TestDirStore(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		d, err := blob.NewDir(filepath.Join(t.TempDir(), "blobs"))
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
