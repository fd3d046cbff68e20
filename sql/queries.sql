-- Runtime queries, one named block each ("-- name: NAME"), parsed once by consumer/queries.py.

-- name: ensure_partition
SELECT archiver_ensure_partition($1::timestamptz);

-- name: create_staging
-- A message's time comes as microseconds since the Unix epoch (UTC): asyncpg encodes a bigint in
-- a third of the client CPU a timestamptz costs, and the sum below is exact over the years
-- the archiver admits (1970..2199, under 2**53 microseconds).
CREATE TEMP TABLE IF NOT EXISTS archiver_staging (
    ordinal          bigint,
    tenant_id        text,
    customer_id      text,
    user_id          text,
    conversation_id  text,
    timestamp_us     bigint,
    keyed_by_time    boolean,
    message_role     text,
    message_content  text,
    metadata         jsonb,
    message_key      text,
    source_key       text
) ON COMMIT DELETE ROWS;

-- name: lock_conversations
-- Upsert first: the row locks serialise concurrent archivers of one conversation, in key order.
-- This is the batch's only write of each conversation row: its first and last message times
-- come computed with the ids. Returns each conversation's ids as stored now, and whether its
-- customer was identified by this batch (its earlier rows are then back-filled). `before` looks
-- each conversation up by its key (a join would scan the whole table once per batch).
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                         $5::timestamptz[], $6::timestamptz[])
        AS t(tenant_id, conversation_id, customer_id, user_id, started_at, ended_at)
), before AS (
    SELECT i.tenant_id, i.conversation_id,
           (SELECT c.customer_id IS NULL FROM conversations c
            WHERE c.tenant_id = i.tenant_id AND c.conversation_id = i.conversation_id) AS anonymous
    FROM input i
), upsert AS (
    INSERT INTO conversations AS c (
        tenant_id, conversation_id, customer_id, user_id, started_at, ended_at)
    SELECT * FROM input ORDER BY 1, 2
    ON CONFLICT (tenant_id, conversation_id) DO UPDATE
        SET customer_id = coalesce(excluded.customer_id, c.customer_id),
            user_id = coalesce(excluded.user_id, c.user_id),
            started_at = least(c.started_at, excluded.started_at),
            ended_at = greatest(c.ended_at, excluded.ended_at),
            last_archived_at = now()
    RETURNING tenant_id, conversation_id, customer_id, user_id
)
SELECT u.tenant_id, u.conversation_id, u.customer_id, u.user_id,
       (coalesce(b.anonymous, false) AND u.customer_id IS NOT NULL) AS identified_now
FROM upsert u JOIN before b USING (tenant_id, conversation_id);

-- name: insert_messages
-- New messages only, one row per identity. A message identified by its content and its own
-- timestamp is deduplicated by the unique identity index (ON CONFLICT). One identified by an
-- id (whose timestamp may be re-serialised differently by a later checkpoint), or whose
-- timestamp came from its checkpoint, is checked by identity alone, under the row lock.
WITH fresh AS (
    SELECT s.* FROM archiver_staging s WHERE s.keyed_by_time
    UNION ALL
    (SELECT DISTINCT ON (s.tenant_id, s.conversation_id, s.message_key) s.*
     FROM archiver_staging s
     WHERE NOT s.keyed_by_time AND NOT EXISTS (
         SELECT 1 FROM conversation_history h
         WHERE h.tenant_id = s.tenant_id
           AND h.conversation_id = s.conversation_id
           AND h.message_key = s.message_key)
     ORDER BY s.tenant_id, s.conversation_id, s.message_key, s.ordinal)
), ins AS (
    INSERT INTO conversation_history (
        tenant_id, customer_id, user_id, conversation_id, "timestamp", message_role,
        message_content, metadata, message_key, source_key)
    SELECT tenant_id, customer_id, user_id, conversation_id,
           'epoch'::timestamptz + timestamp_us * interval '1 microsecond', message_role,
           message_content, metadata, message_key, source_key
    FROM fresh
    ORDER BY ordinal
    ON CONFLICT DO NOTHING
    RETURNING source_key
)
SELECT source_key, count(*) AS n FROM ins GROUP BY source_key;

-- name: backfill_customer
-- A customer identified late: give the conversation's earlier rows its id.
UPDATE conversation_history h
SET customer_id = c.customer_id
FROM unnest($1::text[], $2::text[]) AS t(tenant_id, conversation_id)
JOIN conversations c USING (tenant_id, conversation_id)
WHERE h.tenant_id = t.tenant_id AND h.conversation_id = t.conversation_id
  AND h.customer_id IS NULL;

-- name: insert_dead_letters
INSERT INTO archive_dead_letters AS d (source_key, digest, raw, error, size, truncated)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bigint[], $6::boolean[])
ON CONFLICT (source_key, digest) DO UPDATE
    SET last_seen_at = now(), attempts = d.attempts + 1, error = excluded.error;

-- name: record_run
INSERT INTO archive_runs (kind, host, started_at, finished_at, status, found, archived, messages,
                          dead_letters, errors, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)
RETURNING id;

-- name: recent_runs
SELECT id, kind, host, started_at, finished_at, status, found, archived, messages, dead_letters,
       errors, details
FROM archive_runs ORDER BY started_at DESC, id DESC LIMIT $1;

-- name: open_dead_letters
SELECT count(*) FROM archive_dead_letters WHERE resolved_at IS NULL;

-- name: migrations_bootstrap
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_lock
SELECT pg_advisory_xact_lock(hashtext('archiver_migrate'));

-- name: migrations_applied
SELECT version, name, checksum FROM schema_migrations ORDER BY version;

-- name: migrations_table_exists
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: migrations_record
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: history_page
-- A conversation's messages in order, keyset-paginated on ("timestamp", id).
SELECT id, tenant_id, conversation_id, customer_id, user_id, "timestamp", message_role,
       message_content, metadata, message_key, source_key, archived_at
FROM conversation_history
WHERE conversation_id = $1 AND ($2::text IS NULL OR tenant_id = $2)
  AND ($3::timestamptz IS NULL OR "timestamp" >= $3)
  AND ($4::timestamptz IS NULL OR "timestamp" < $4)
  AND ($5::timestamptz IS NULL OR ("timestamp", id) > ($5, $6::bigint))
ORDER BY "timestamp", id
LIMIT $7;

-- name: database_now
SELECT now();

-- name: conversations_page
-- Newest first, keyset-paginated on (ended_at, tenant_id, conversation_id). Message counts are
-- counted for the page's rows only, from what the archive holds now.
SELECT p.*,
       (SELECT count(*) FROM conversation_history h
        WHERE h.tenant_id = p.tenant_id AND h.conversation_id = p.conversation_id) AS message_count
FROM (
    SELECT tenant_id, conversation_id, customer_id, user_id, started_at, ended_at,
           last_archived_at
    FROM conversations
    WHERE ($1::text IS NULL OR tenant_id = $1)
      AND ($2::text IS NULL OR customer_id = $2)
      AND ($3::text IS NULL OR user_id = $3)
      AND ($4::timestamptz IS NULL OR ended_at >= $4)
      AND ($5::timestamptz IS NULL OR started_at < $5)
      AND ended_at IS NOT NULL
      AND ($6::timestamptz IS NULL OR (ended_at, tenant_id, conversation_id) < ($6, $7, $8))
    ORDER BY ended_at DESC, tenant_id DESC, conversation_id DESC
    LIMIT $9
) p
ORDER BY p.ended_at DESC, p.tenant_id DESC, p.conversation_id DESC;

-- name: dead_letters_list
SELECT id, source_key, error, octet_length(raw) AS bytes, first_seen_at, last_seen_at, attempts,
       resolved_at
FROM archive_dead_letters
WHERE ($1::boolean OR resolved_at IS NULL) AND ($3::bigint IS NULL OR id > $3)
ORDER BY id
LIMIT $2;

-- name: dead_letters_open
SELECT id, source_key, raw FROM archive_dead_letters
WHERE resolved_at IS NULL AND NOT truncated AND (cardinality($1::bigint[]) = 0 OR id = ANY($1))
ORDER BY id;

-- name: dead_letters_resolve
UPDATE archive_dead_letters SET resolved_at = now() WHERE id = ANY($1::bigint[]);

-- name: dead_letters_failed_again
UPDATE archive_dead_letters
SET attempts = attempts + 1, last_seen_at = now(), error = $2
WHERE id = $1;
