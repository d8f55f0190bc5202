package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"path/filepath"
	"testing"
	"time"

	"switchboard/internal/blob"
	"switchboard/internal/blob/blobtest"
	"switchboard/internal/store/pgtest"
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
// key, whatever the order of Puts and Deletes; Delete leaves none.
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
	if err := s.pool.QueryRow(listCtx, `SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'`).Scan(&open); err != nil || open != 0 {
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
