package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-hub/switchboard/internal/blob"
)

// DefaultBlobChunkSize is the size of the chunks Blobs stores files in.
// A Put or an open Reader holds one chunk in memory (a Put two: the one
// being sent and the one being read); a chunk costs one round trip.
const DefaultBlobChunkSize = 1 << 20

// Blobs is a blob.Store in the database, for result files that every
// node of a cluster must serve. It is safe for concurrent use and lives
// as long as its Store.
//
// A file is stored in chunks (tables blobs, blob_chunks and blob_uploads,
// migration 00006). Put sends each chunk in a statement of its own,
// holding a pooled connection only meanwhile, under a new generation that
// no reader sees; the file appears, replacing the previous one, in one
// short transaction at the end. So a Put is all or nothing and durable
// when it returns, and slow uploads cannot take the connections that the
// node's other work needs. A Reader fetches one chunk at a time, each in
// its own short query; if the file is replaced or deleted meanwhile, the
// Reader fails with blob.ErrReplaced at its next chunk instead of reading
// on (a file of one chunk is read whole by Open). Errors of an unreachable
// database wrap store.ErrUnavailable.
type Blobs struct {
	s         *Store
	chunkSize int
}

var _ blob.Store = (*Blobs)(nil)

// Blobs returns the Store's result files.
func (s *Store) Blobs() *Blobs { return &Blobs{s: s, chunkSize: DefaultBlobChunkSize} }

// abandonedUploadAge is the age past which an upload's record means its
// Put will not finish (its node died): a later Put deletes it and its
// chunks, and a Put that took longer fails.
const abandonedUploadAge = 24 * time.Hour

// Put implements blob.Store. It holds a pooled connection only while it
// sends a chunk, never while it waits for r (an upload from a slow agent),
// and inserts a chunk while it reads the next from r. The file appears in
// one transaction at the end.
func (b *Blobs) Put(ctx context.Context, key string, r io.Reader, limit int64, check func(blob.Info) error) (blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	if err := blob.CheckKey(key); err != nil {
		return blob.Info{}, err
	}
	generation, err := b.startUpload(ctx, key)
	if err != nil {
		return blob.Info{}, err
	}
	var (
		inserting chan error // the insert in flight, if not nil: its result
		stored    bool
	)
	defer func() {
		if inserting != nil {
			<-inserting // its chunk must not land after the cleanup below
		}
		if !stored {
			b.dropUpload(ctx, key, generation)
		}
	}()

	// Two buffers: chunk seq is read into one while chunk seq-1 is sent
	// from the other; the insert of seq-1 ends before that of seq starts.
	bufs := [2][]byte{make([]byte, b.chunkSize), make([]byte, b.chunkSize)}
	src := io.LimitReader(r, max(limit, 0)+1)
	h := sha256.New()
	var size int64
	for seq := 0; ; seq++ {
		buf := bufs[seq%2]
		n, rerr := fill(src, buf)
		h.Write(buf[:n])
		size += int64(n)
		if inserting != nil {
			err := <-inserting
			inserting = nil
			if err != nil {
				return blob.Info{}, err
			}
		}
		if rerr != nil {
			return blob.Info{}, fmt.Errorf("blob: put %s: %w", key, rerr)
		}
		if size > limit {
			return blob.Info{}, fmt.Errorf("%w: %s: more than %d bytes", blob.ErrTooLarge, key, limit)
		}
		if n > 0 {
			inserting = make(chan error, 1)
			go func(data []byte, seq int) {
				inserting <- b.s.query(ctx, "blob put", func(conn *pgxpool.Conn) error {
					_, err := conn.Exec(ctx, `INSERT INTO blob_chunks (key, generation, seq, data) VALUES ($1, $2, $3, $4)`,
						key, generation, seq, data)
					return err
				})
			}(buf[:n], seq)
		}
		if n < len(buf) {
			break
		}
	}
	if inserting != nil {
		err := <-inserting
		inserting = nil
		if err != nil {
			return blob.Info{}, err
		}
	}
	info := blob.Info{Key: key, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	if check != nil {
		if err := check(info); err != nil {
			return blob.Info{}, err
		}
	}
	if info.ModTime, err = b.finishUpload(ctx, info, generation); err != nil {
		return blob.Info{}, err
	}
	stored = true
	return info, nil
}

// startUpload deletes the uploads abandoned long ago with their chunks,
// then takes a generation for key's new content and records the upload.
func (b *Blobs) startUpload(ctx context.Context, key string) (int64, error) {
	var generation int64
	err := b.s.inTx(ctx, "blob put", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `WITH gone AS (
				DELETE FROM blob_uploads WHERE started_at < now() - make_interval(secs => $1) RETURNING key, generation)
			DELETE FROM blob_chunks c USING gone WHERE c.key = gone.key AND c.generation = gone.generation`,
			abandonedUploadAge.Seconds())
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO blob_uploads (generation, key, started_at)
			VALUES (nextval('blob_generations'), $1, now()) RETURNING generation`, key).Scan(&generation)
	})
	return generation, err
}

// finishUpload makes generation key's content, in one transaction: it
// points key's row at it and deletes the generation it replaces and the
// upload's record. Finishing uploads of one key take turns (an advisory
// lock on the key), so each deletes what the one before stored.
func (b *Blobs) finishUpload(ctx context.Context, info blob.Info, generation int64) (time.Time, error) {
	var modTime time.Time
	err := b.s.inTx(ctx, "blob put", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, $2))`, info.Key, blobKeyLockSeed); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM blob_uploads WHERE generation = $1`, generation)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("upload of %s abandoned: it took more than %s", info.Key, abandonedUploadAge)
		}
		var replaced *int64
		err = tx.QueryRow(ctx, `SELECT generation FROM blobs WHERE key = $1 FOR UPDATE`, info.Key).Scan(&replaced)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO blobs (key, generation, size, sha256, chunk_size, mod_time)
			VALUES ($1, $2, $3, $4, $5, now())
			ON CONFLICT (key) DO UPDATE SET generation = excluded.generation, size = excluded.size,
				sha256 = excluded.sha256, chunk_size = excluded.chunk_size, mod_time = excluded.mod_time
			RETURNING mod_time`, info.Key, generation, info.Size, info.SHA256, b.chunkSize).Scan(&modTime)
		if err != nil || replaced == nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM blob_chunks WHERE key = $1 AND generation = $2`, info.Key, *replaced)
		return err
	})
	return modTime, err
}

// blobKeyLockSeed seeds the hash of a key into the advisory lock that
// finishing uploads of the key take, apart from the store's other locks.
const blobKeyLockSeed int64 = 0x5377_6264_426c_6f62 // "SwbdBlob"

// dropUpload deletes a failed upload's chunks and record. It runs even if
// ctx is done; if it fails, a Put a day later does it.
func (b *Blobs) dropUpload(ctx context.Context, key string, generation int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b.s.inTx(ctx, "blob put: drop", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM blob_chunks WHERE key = $1 AND generation = $2`, key, generation); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM blob_uploads WHERE generation = $1`, generation)
		return err
	})
}

// fill reads into buf until it is full or r ends. Unlike io.ReadFull it
// returns no error at the end of r, and passes on every other error as is
// (an HTTP body cut short fails with io.ErrUnexpectedEOF: not an end).
func fill(r io.Reader, buf []byte) (int, error) {
	n, empty := 0, 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if m == 0 && err == nil {
			if empty++; empty == 100 {
				return n, io.ErrNoProgress
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Open implements blob.Store. The first chunk comes with the file's row.
func (b *Blobs) Open(ctx context.Context, key string) (blob.Reader, blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, blob.Info{}, err
	}
	if err := blob.CheckKey(key); err != nil {
		return nil, blob.Info{}, err
	}
	conn, err := b.s.acquire(ctx, "blob open")
	if err != nil {
		return nil, blob.Info{}, err
	}
	defer conn.Release()
	rd := &blobReader{b: b, ctx: ctx, key: key}
	info := blob.Info{Key: key}
	var first []byte
	err = conn.QueryRow(ctx, `SELECT b.generation, b.size, b.chunk_size, b.mod_time, c.data
		FROM blobs b LEFT JOIN blob_chunks c ON c.key = b.key AND c.generation = b.generation AND c.seq = 0
		WHERE b.key = $1`, key).Scan(&rd.generation, &info.Size, &rd.chunkSize, &info.ModTime, &first)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, blob.Info{}, fmt.Errorf("%w: %s", blob.ErrNotFound, key)
	}
	if err != nil {
		return nil, blob.Info{}, wrap("blob open", err)
	}
	rd.size = info.Size
	if info.Size > 0 && int64(len(first)) == min(int64(rd.chunkSize), info.Size) {
		rd.buf, rd.bufSeq = first, 0
	} // else Read fetches it (and fails with ErrReplaced: it was not there)
	return rd, info, nil
}

// blobReader reads one generation of a file chunk by chunk. Not safe for
// concurrent use (an io.ReadSeeker is not).
type blobReader struct {
	b          *Blobs
	ctx        context.Context // Open's: the reader lives within it
	key        string
	generation int64
	size       int64
	chunkSize  int

	off    int64  // the position of the next Read
	buf    []byte // chunk bufSeq, or nil
	bufSeq int64
	closed bool
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, fmt.Errorf("blob: read %s: reader closed", r.key)
	}
	if r.off >= r.size {
		return 0, io.EOF
	}
	seq := r.off / int64(r.chunkSize)
	if r.buf == nil || r.bufSeq != seq {
		if err := r.fetch(seq); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf[r.off-seq*int64(r.chunkSize):])
	r.off += int64(n)
	return n, nil
}

// fetch reads chunk seq of the reader's generation into buf.
func (r *blobReader) fetch(seq int64) error {
	conn, err := r.b.s.acquire(r.ctx, "blob read")
	if err != nil {
		return err
	}
	defer conn.Release()
	data := r.buf[:0] // the previous chunk's buffer, reused
	err = conn.QueryRow(r.ctx, `SELECT data FROM blob_chunks WHERE key = $1 AND generation = $2 AND seq = $3`,
		r.key, r.generation, seq).Scan(appendBytes{&data})
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s", blob.ErrReplaced, r.key)
	}
	if err != nil {
		r.buf = nil
		return wrap("blob read", err)
	}
	want := min(int64(r.chunkSize), r.size-seq*int64(r.chunkSize))
	if int64(len(data)) != want {
		r.buf = nil
		return fmt.Errorf("postgres: blob read %s: chunk %d has %d bytes, want %d", r.key, seq, len(data), want)
	}
	r.buf, r.bufSeq = data, seq
	return nil
}

// appendBytes scans a bytea into the slice it points to, reusing its
// array (a *[]byte would get a new one for every chunk).
type appendBytes struct{ dst *[]byte }

func (a appendBytes) ScanBytes(v []byte) error {
	*a.dst = append((*a.dst)[:0], v...)
	return nil
}

func (r *blobReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, fmt.Errorf("blob: seek %s: invalid whence %d", r.key, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("blob: seek %s: negative position %d", r.key, abs)
	}
	r.off = abs
	return abs, nil
}

func (r *blobReader) Close() error {
	r.closed, r.buf = true, nil
	return nil
}

// keyRange returns the bounds of the keys strictly under prefix: every
// key that starts with prefix+"/" lies between them, and no other (keys
// compare byte by byte, '0' is the byte after '/').
func keyRange(prefix string) (after, before string) { return prefix + "/", prefix + "0" }

// List implements blob.Store.
func (b *Blobs) List(ctx context.Context, prefix string) ([]blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := blob.CheckPrefix(prefix); err != nil {
		return nil, err
	}
	conn, err := b.s.acquire(ctx, "blob list")
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	after, before := keyRange(prefix)
	rows, err := conn.Query(ctx, `SELECT key, size, mod_time FROM blobs
		WHERE key = $1 OR (key > $2 AND key < $3) ORDER BY key`, prefix, after, before)
	if err != nil {
		return nil, wrap("blob list", err)
	}
	infos, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (blob.Info, error) {
		var i blob.Info
		err := row.Scan(&i.Key, &i.Size, &i.ModTime)
		return i, err
	})
	if err != nil {
		return nil, wrap("blob list", err)
	}
	return infos, nil
}

// Delete implements blob.Store. It deletes the rows, then the chunks of
// the generations they named, in two statements: a Put of a key under
// prefix that commits meanwhile is either deleted whole (the row's delete
// waited for it, and the second statement sees its chunks) or stays whole
// (its row was not seen, and its generation is not named).
func (b *Blobs) Delete(ctx context.Context, prefix string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := blob.CheckPrefix(prefix); err != nil {
		return err
	}
	after, before := keyRange(prefix)
	return b.s.inTx(ctx, "blob delete", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM blobs WHERE key = $1 OR (key > $2 AND key < $3) RETURNING key, generation`,
			prefix, after, before)
		if err != nil {
			return err
		}
		var (
			keys        []string
			generations []int64
		)
		var key string
		var generation int64
		_, err = pgx.ForEachRow(rows, []any{&key, &generation}, func() error {
			keys, generations = append(keys, key), append(generations, generation)
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM blob_chunks c USING unnest($1::text[], $2::bigint[]) AS g(key, generation)
			WHERE c.key = g.key AND c.generation = g.generation`, keys, generations)
		return err
	})
}
