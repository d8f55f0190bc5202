package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"testing/iotest"
	"time"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/blob/blobtest"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
)

// testChunkSize makes the conformance suite's files span many chunks.
const testChunkSize = 4 << 10

func TestBlobsConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		b := openBlobs(t)
		b.chunkSize = testChunkSize
		return b
	})
}

// openBlobs returns the Blobs of a fresh database, closed by the test.
func openBlobs(t testing.TB) *Blobs {
	t.Helper()
	url := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Blobs()
}

// TestBlobsNoLeftoverChunks: Put leaves one generation's chunks per
// key, whatever the order of Puts and Deletes; Delete leaves none; a
// failed Put leaves none, nor its upload's record; a later Put deletes
// an upload abandoned (its node died) a day ago.
func TestBlobsNoLeftoverChunks(t *testing.T) {
	b := openBlobs(t)
	b.chunkSize = testChunkSize
	db := b.s
	ctx := context.Background()
	chunks := func() (n int) {
		t.Helper()
		if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM blob_chunks`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	blobtest.Put(t, b, "j/a/f", string(bytes.Repeat([]byte{1}, 3*testChunkSize)))
	blobtest.Put(t, b, "j/a/f", string(bytes.Repeat([]byte{2}, 2*testChunkSize+1)))
	blobtest.Put(t, b, "j/a/g", "x")
	if got := chunks(); got != 4 {
		t.Fatalf("chunks after replacing a file of 3 by one of 3 and adding one of 1: %d", got)
	}
	if err := b.Delete(ctx, "j/a/f"); err != nil {
		t.Fatal(err)
	}
	if got := chunks(); got != 1 {
		t.Fatalf("chunks after deleting the file of 3: %d", got)
	}
	if err := b.Delete(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	if got := chunks(); got != 0 {
		t.Fatalf("chunks after deleting all: %d", got)
	}

	// Failed Puts take their chunks and records with them.
	long := bytes.Repeat([]byte{3}, 5*testChunkSize)
	errRefused := errors.New("refused")
	for _, put := range []func() error{
		func() error { _, err := b.Put(ctx, "j/a/f", bytes.NewReader(long), 4*testChunkSize, nil); return err },
		func() error {
			_, err := b.Put(ctx, "j/a/f", bytes.NewReader(long), 1<<20, func(blob.Info) error { return errRefused })
			return err
		},
		func() error {
			_, err := b.Put(ctx, "j/a/f", io.MultiReader(bytes.NewReader(long), iotest.ErrReader(io.ErrUnexpectedEOF)), 1<<20, nil)
			return err
		},
	} {
		if err := put(); err == nil {
			t.Fatal("a Put that should fail did not")
		}
	}
	var uploads int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM blob_uploads`).Scan(&uploads); err != nil || uploads != 0 || chunks() != 0 {
		t.Fatalf("after failed Puts: %d upload records (%v), %d chunks", uploads, err, chunks())
	}

	// An upload whose node died a day ago goes with the next Put.
	_, err := db.pool.Exec(ctx, `INSERT INTO blob_uploads (generation, key, started_at) VALUES (nextval('blob_generations'), 'j/dead/f', now() - interval '25 hours');
		INSERT INTO blob_chunks (key, generation, seq, data) SELECT key, generation, 0, '\x00' FROM blob_uploads`)
	if err != nil {
		t.Fatal(err)
	}
	blobtest.Put(t, b, "j/a/g", "x")
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM blob_uploads`).Scan(&uploads); err != nil || uploads != 0 || chunks() != 1 {
		t.Fatalf("after a Put a day after an abandoned upload: %d upload records (%v), %d chunks (want only j/a/g's)", uploads, err, chunks())
	}
}

// benchFileSize is the size of a file in the Put and Open benchmarks:
// the default --job-max-file.
const benchFileSize = 64 << 20

// BenchmarkBlobs64MiB measures Put and Open (read to the end) of a 64 MiB
// file in the database and, for comparison, in a blob.Dir:
//
//	go test -run '^$' -bench Blobs64MiB -benchtime 5x ./internal/store/postgres
func BenchmarkBlobs64MiB(b *testing.B) {
	content := make([]byte, benchFileSize)
	rand.Read(content) // incompressible, as most result files
	db := openBlobs(b)
	dir, err := blob.NewDir(filepath.Join(b.TempDir(), "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []struct {
		name  string
		store blob.Store
	}{{"postgres", db}, {"dir", dir}} {
		b.Run(s.name+"/put", func(b *testing.B) {
			b.SetBytes(benchFileSize)
			for b.Loop() {
				if _, err := s.store.Put(context.Background(), "bench/a/f", bytes.NewReader(content), benchFileSize, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.name+"/open", func(b *testing.B) {
			b.SetBytes(benchFileSize)
			for b.Loop() {
				r, _, err := s.store.Open(context.Background(), "bench/a/f")
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, r)
				r.Close()
				if err != nil || n != benchFileSize {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
		})
	}
}

// TestBlobsUploadHoldsNoConnection: a Put waiting for its reader (an
// agent's upload arriving slowly) holds no pooled connection, so slow
// uploads cannot starve the node's other store work; and it holds no
// transaction open meanwhile.
func TestBlobsUploadHoldsNoConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, pgtest.Start(t), Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b := s.Blobs()
	b.chunkSize = testChunkSize
	pr, pw := io.Pipe()
	defer pw.CloseWithError(errors.New("test failed")) // a Put that holds the connection must end for Close
	done := make(chan error, 1)
	go func() {
		_, err := b.Put(ctx, "j/a/slow", pr, 1<<20, nil)
		done <- err
	}()
	// Each Write returns once Put has read it: after the second, the
	// first chunk has been sent and Put waits for the rest.
	pw.Write(bytes.Repeat([]byte{'x'}, 3*testChunkSize))
	pw.Write(bytes.Repeat([]byte{'x'}, 3*testChunkSize))
	listCtx, cancelList := context.WithTimeout(ctx, 3*time.Second)
	defer cancelList()
	if _, err := b.List(listCtx, "j"); err != nil {
		t.Fatalf("List while a Put waits for its reader, on a pool of one connection: %v", err)
	}
	var open int
	if err := s.pool.QueryRow(listCtx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`).Scan(&open); err != nil || open != 0 {
		t.Fatalf("transactions left open by the waiting Put: %d %v", open, err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := blobtest.Read(t, b, "j/a/slow"); len(got) != 6*testChunkSize {
		t.Fatalf("stored %d bytes", len(got))
	}
}
