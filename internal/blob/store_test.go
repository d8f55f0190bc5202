package blob_test

import (
	"path/filepath"
	"testing"

	"switchboard/internal/blob"
	"switchboard/internal/blob/blobtest"
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
