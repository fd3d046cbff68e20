-- Dead letters of values too large to keep whole (issue 10; numbers 0004-0007 are other
-- changes' migrations).
--
-- A checkpoint over ARCHIVER_MAX_PAYLOAD is never read whole: the archiver checks its size in
-- Redis first (STRLEN), reads it in chunks only to take its SHA-1, and dead-letters it in a
-- transaction of its own with its first bytes. Such a row's `raw` is a prefix (`truncated`),
-- `size` the size of the whole value and `digest` the SHA-1 of the whole value, as for every
-- other dead letter. `archiver dead-letters replay` skips truncated rows: there is nothing to
-- decode. `size` is NULL in rows written before this migration (their raw is whole: its
-- octet_length is the size); the archiver fills it in for every new row.
ALTER TABLE archive_dead_letters
    ADD COLUMN size bigint,
    ADD COLUMN truncated boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN archive_dead_letters.raw IS
    'the value as it was in Redis; only its first bytes when truncated';
COMMENT ON COLUMN archive_dead_letters.digest IS
    'SHA-1 of the whole value (also when raw is truncated)';
COMMENT ON COLUMN archive_dead_letters.size IS
    'bytes of the whole value (NULL in older rows: octet_length(raw))';
COMMENT ON COLUMN archive_dead_letters.truncated IS
    'raw holds only the first bytes of a value over ARCHIVER_MAX_PAYLOAD';
