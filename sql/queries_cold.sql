-- The cold tier's queries (consumer/cold/). A tenant's month is [$2, $3) of "timestamp".

-- name: cold_lock_month
-- Only one export of a tenant's month at a time (released with the export's transaction).
SELECT pg_try_advisory_xact_lock(hashtextextended('archiver_cold:' || $1::text || ':' || $2::date::text, 0));

-- name: cold_month_stats
-- The rows of a tenant's month and their content digest: the sum of the first 64 bits (as a
-- signed integer) of md5(conversation_id, 0x1f, message_key, 0x1f, epoch microseconds) over
-- the rows, exact (numeric) and independent of their order; consumer/cold/digest.py computes
-- the same over the files.
SELECT count(*) AS rows,
       coalesce(sum(('x' || left(md5(conversation_id || E'\x1f' || message_key || E'\x1f'
                     || (extract(epoch FROM "timestamp") * 1000000)::bigint::text), 16)
                    )::bit(64)::bigint::numeric), 0)::text AS digest,
       min("timestamp") AS min_timestamp,
       max("timestamp") AS max_timestamp
FROM conversation_history
WHERE tenant_id = $1 AND "timestamp" >= $2 AND "timestamp" < $3;

-- name: cold_month_copy
-- The export's rows, for COPY (CSV): times as epoch microseconds, metadata as JSON text,
-- sorted by conversation and time (asyncpg binds the parameters of COPY's query). No
-- semicolon and no comment after it: asyncpg wraps it in COPY (...) TO STDOUT.
SELECT id, customer_id, user_id, conversation_id,
       (extract(epoch FROM "timestamp") * 1000000)::bigint AS timestamp_us,
       message_role, message_content, metadata::text AS metadata, message_key, source_key,
       (extract(epoch FROM archived_at) * 1000000)::bigint AS archived_at_us
FROM conversation_history
WHERE tenant_id = $1 AND "timestamp" >= $2 AND "timestamp" < $3
ORDER BY conversation_id, "timestamp", message_key

-- name: cold_current
SELECT * FROM archived_partitions
WHERE table_name = 'conversation_history' AND tenant_id = $1 AND month = $2 AND is_current;

-- name: cold_next_version
SELECT coalesce(max(version), 0) + 1 FROM archived_partitions
WHERE table_name = 'conversation_history' AND tenant_id = $1 AND month = $2;

-- name: cold_retire
UPDATE archived_partitions SET is_current = false
WHERE table_name = 'conversation_history' AND tenant_id = $1 AND month = $2 AND is_current;

-- name: cold_record
INSERT INTO archived_partitions (
    tenant_id, month, version, export_id, archive_path, manifest_path, files,
    row_count, compressed_size, sha256, content_digest, min_timestamp, max_timestamp,
    format, compression)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
RETURNING *;

-- name: cold_list
SELECT * FROM archived_partitions
WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::date IS NULL OR month = $2)
  AND (is_current OR $3)
ORDER BY tenant_id, month, version;

-- name: cold_verified
UPDATE archived_partitions SET verified_at = now(), verify_error = NULL WHERE id = $1
RETURNING verified_at;

-- name: cold_verify_failed
UPDATE archived_partitions SET verified_at = NULL, verify_error = $2 WHERE id = $1;

-- name: cold_tenant_months
-- The tenants with rows in [$1, $2) (a skip scan of the (tenant_id, "timestamp") index).
WITH RECURSIVE t AS (
    (SELECT tenant_id FROM conversation_history
     WHERE "timestamp" >= $1 AND "timestamp" < $2 ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT h.tenant_id FROM conversation_history h
            WHERE h.tenant_id > t.tenant_id AND h."timestamp" >= $1 AND h."timestamp" < $2
            ORDER BY h.tenant_id LIMIT 1)
    FROM t WHERE t.tenant_id IS NOT NULL
)
SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL;

-- name: cold_restore_staging
CREATE TEMP TABLE IF NOT EXISTS archiver_cold_restore (
    customer_id      text,
    user_id          text,
    conversation_id  text,
    timestamp_us     bigint,
    message_role     text,
    message_content  text,
    metadata         text,
    message_key      text,
    source_key       text,
    archived_at_us   bigint
) ON COMMIT DELETE ROWS;

-- name: cold_restore_insert
-- Rows of the staging table not in conversation_history (by identity) go back, with their
-- conversations' rows (created again if retention removed them, started_at moved back);
-- never a row of an erasure in progress (archiver_erasing, sql/0006_erasure.sql).
WITH conv AS (
    INSERT INTO conversations AS c (tenant_id, conversation_id, customer_id, user_id,
                                    started_at, ended_at)
    SELECT $1, conversation_id, max(customer_id), max(user_id),
           min('epoch'::timestamptz + timestamp_us * interval '1 microsecond'),
           max('epoch'::timestamptz + timestamp_us * interval '1 microsecond')
    FROM archiver_cold_restore
    WHERE NOT archiver_erasing($1, customer_id, user_id, conversation_id,
                               'epoch'::timestamptz + timestamp_us * interval '1 microsecond')
    GROUP BY conversation_id ORDER BY conversation_id
    ON CONFLICT (tenant_id, conversation_id) DO UPDATE
        SET started_at = least(c.started_at, excluded.started_at),
            ended_at = greatest(c.ended_at, excluded.ended_at)
), ins AS (
    INSERT INTO conversation_history (
        tenant_id, customer_id, user_id, conversation_id, "timestamp", message_role,
        message_content, metadata, message_key, source_key, archived_at)
    SELECT $1, customer_id, user_id, conversation_id,
           'epoch'::timestamptz + timestamp_us * interval '1 microsecond', message_role,
           message_content, metadata::jsonb, message_key, source_key,
           'epoch'::timestamptz + archived_at_us * interval '1 microsecond'
    FROM archiver_cold_restore
    WHERE NOT archiver_erasing($1, customer_id, user_id, conversation_id,
                               'epoch'::timestamptz + timestamp_us * interval '1 microsecond')
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins;

-- name: cold_export_tenants
-- Tenants whose policy (their own, else the default) is `export`, with their cutoff now.
SELECT t.tenant_id, now() - coalesce(tp.keep, dp.keep) AS cutoff
FROM unnest($1::text[]) AS t(tenant_id)
LEFT JOIN retention_policies tp ON tp.scope = 'tenant' AND tp.tenant_id = t.tenant_id
LEFT JOIN retention_policies dp ON dp.scope = 'default' AND dp.tenant_id = ''
WHERE coalesce(tp.then_action, dp.then_action) = 'export';

-- name: cold_query_view
-- DuckDB (consumer/cold/query.py): the cold tier's rows in every format as one view; the two
-- sources have the same columns (the files' and tenant_id, month from the path).
CREATE VIEW conversation_history AS
SELECT * FROM archiver_cold_parquet
UNION ALL BY NAME
SELECT * FROM archiver_cold_jsonl
