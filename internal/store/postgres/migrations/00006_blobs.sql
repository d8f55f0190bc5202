-- Result files (blob.Store, Store.Blobs): every node reads every file.
--
-- A file is a row of blobs naming its generation and the generation's
-- chunks. Put records an upload, inserts a new generation's chunks one
-- statement each (holding no connection or transaction while it waits
-- for the uploader), then in one transaction points the key's row at it,
-- deletes the chunks of the generation it replaces and the upload's
-- record. Readers, which fetch chunks one at a time outside any
-- transaction, find their generation whole or gone (never a mix).
--
-- Keys are compared byte by byte (COLLATE "C"), as Go compares strings:
-- a prefix "p" is the range ("p/", "p0"), '0' being the byte after '/'.

-- +goose Up
CREATE SEQUENCE blob_generations;

CREATE TABLE blobs (
	key        text COLLATE "C" PRIMARY KEY,
	generation bigint      NOT NULL,
	size       bigint      NOT NULL CHECK (size >= 0),
	sha256     text        NOT NULL,
	chunk_size integer     NOT NULL CHECK (chunk_size > 0),
	mod_time   timestamptz NOT NULL
);

-- Chunk seq holds bytes [seq*chunk_size, (seq+1)*chunk_size) of the file;
-- an empty file has none.
CREATE TABLE blob_chunks (
	key        text COLLATE "C" NOT NULL,
	generation bigint  NOT NULL,
	seq        integer NOT NULL,
	data       bytea   NOT NULL,
	PRIMARY KEY (key, generation, seq)
);
-- Chunks are stored as they are, not compressed: pglz made the Put of a
-- 64 MiB CSV file 3 times slower (15 MB/s against 42 MB/s, 2-core
-- machine), and compressed results gain nothing from it.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Uploads in progress. A failed Put deletes its record and chunks; a
-- record older than a day is an upload whose node died (or a Put that
-- took a day), deleted with its chunks by a later Put.
CREATE TABLE blob_uploads (
	generation bigint PRIMARY KEY,
	key        text COLLATE "C" NOT NULL,
	started_at timestamptz NOT NULL
);
CREATE INDEX blob_uploads_started_at ON blob_uploads (started_at);

-- +goose Down
DROP TABLE blob_uploads;
DROP TABLE blob_chunks;
DROP TABLE blobs;
DROP SEQUENCE blob_generations;
