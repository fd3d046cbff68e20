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
-- A message already older than its tenant's `delete` retention policy is not archived again
-- (a checkpoint carries a conversation's whole history, so retention would otherwise see its
-- old messages come back with every checkpoint); its conversation is marked for retention to
-- settle (its started_at may name a message that is not kept). A new row of a month that
-- retention is releasing to the cold tier marks the release late (sql/0012).
WITH cutoffs AS MATERIALIZED (
    -- per tenant of the batch: messages before floor_us (epoch microseconds) are not archived
    SELECT t.tenant_id,
           coalesce(CASE WHEN coalesce(tp.then_action, dp.then_action) = 'delete' THEN
                        (extract(epoch FROM now() - coalesce(tp.keep, dp.keep)) * 1000000)::bigint
                    END, -9223372036854775808) AS floor_us
    FROM (SELECT DISTINCT tenant_id FROM archiver_staging) t
    LEFT JOIN retention_policies tp ON tp.scope = 'tenant' AND tp.tenant_id = t.tenant_id
    LEFT JOIN retention_policies dp ON dp.scope = 'default' AND dp.tenant_id = ''
                                   AND tp.scope IS NULL
), expired AS (
    INSERT INTO retention_touched (tenant_id, conversation_id, month)
    SELECT DISTINCT s.tenant_id, s.conversation_id,
           date_trunc('month', ('epoch'::timestamptz + s.timestamp_us * interval '1 microsecond')
                               AT TIME ZONE 'UTC')::date
    FROM archiver_staging s JOIN cutoffs c USING (tenant_id)
    WHERE s.timestamp_us < c.floor_us
    ON CONFLICT DO NOTHING
), fresh AS (
    SELECT s.* FROM archiver_staging s JOIN cutoffs c USING (tenant_id)
    WHERE s.keyed_by_time AND s.timestamp_us >= c.floor_us
    UNION ALL
    (SELECT DISTINCT ON (s.tenant_id, s.conversation_id, s.message_key) s.*
     FROM archiver_staging s JOIN cutoffs c USING (tenant_id)
     WHERE NOT s.keyed_by_time AND s.timestamp_us >= c.floor_us AND NOT EXISTS (
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
    RETURNING source_key, tenant_id, "timestamp"
), late AS (
    -- a new row in a month retention is releasing to the cold tier stops its deletes (0012);
    -- the release's row lock is held until this batch commits
    UPDATE retention_releases r SET late = true
    FROM (SELECT DISTINCT tenant_id,
                 date_trunc('month', "timestamp" AT TIME ZONE 'UTC')::date AS month
          FROM ins WHERE EXISTS (SELECT 1 FROM retention_releases)) n
    WHERE r.tenant_id = n.tenant_id AND r.month = n.month AND NOT r.late
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

-- ------------------------------------------------------------------------------------------
-- Periodic jobs (consumer/jobs.py): leases and runs. Times come from PostgreSQL's clock.

-- name: job_now
SELECT clock_timestamp() AS now;

-- name: job_ensure
INSERT INTO job_leases (job) VALUES ($1) ON CONFLICT (job) DO NOTHING;

-- name: job_lock
-- The job's row, locked for the claim's transaction, with PostgreSQL's time.
SELECT job, holder, expires_at, run_id, last_slot, clock_timestamp() AS now,
       (expires_at IS NOT NULL AND expires_at > clock_timestamp()) AS held
FROM job_leases WHERE job = $1 FOR UPDATE;

-- name: job_interrupted
-- A run whose holder stopped renewing its lease (killed, crashed, or cut off) without finishing.
UPDATE job_runs
SET status = 'interrupted', finished_at = clock_timestamp(),
    error = coalesce(error, 'interrupted: its holder stopped renewing the lease (killed, crashed or cut off)')
WHERE id = $1 AND status = 'running';

-- name: job_run_start
INSERT INTO job_runs (job, trigger, holder, slot, started_at, status)
VALUES ($1, $2, $3, $4, clock_timestamp(), 'running')
RETURNING id, started_at;

-- name: job_take
UPDATE job_leases
SET holder = $2, expires_at = clock_timestamp() + $3::interval, run_id = $4,
    last_slot = coalesce($5, last_slot)
WHERE job = $1;

-- name: job_renew
-- Extend the lease if we still hold it; also saves the run's counts so far. No row: lost.
WITH lease AS (
    UPDATE job_leases SET expires_at = clock_timestamp() + $3::interval
    WHERE job = $1 AND holder = $2
    RETURNING run_id
)
UPDATE job_runs r SET counts = $4::jsonb
FROM lease WHERE r.id = lease.run_id
RETURNING r.id;

-- name: job_run_finish
UPDATE job_runs
SET status = $2, finished_at = clock_timestamp(), counts = $3::jsonb, error = $4
WHERE id = $1
RETURNING finished_at, extract(epoch FROM finished_at - started_at)::float8 AS seconds;

-- name: job_release
UPDATE job_leases SET holder = NULL, expires_at = NULL, run_id = NULL
WHERE job = $1 AND holder = $2;

-- name: job_states
-- Each named job's lease and its last runs: the latest, the latest finished, the latest ok.
SELECT n.job, clock_timestamp() AS now, l.holder, l.expires_at, l.last_slot,
       (l.expires_at IS NOT NULL AND l.expires_at > clock_timestamp()) AS held,
       l.run_id AS running_id,
       last.id AS last_id, last.trigger AS last_trigger, last.started_at AS last_started_at,
       last.finished_at AS last_finished_at, last.status AS last_status,
       last.counts AS last_counts, last.error AS last_error,
       done.status AS finished_status, done.finished_at AS finished_at, done.error AS finished_error,
       ok.finished_at AS last_success_at
FROM unnest($1::text[]) AS n(job)
LEFT JOIN job_leases l ON l.job = n.job
LEFT JOIN LATERAL (
    SELECT * FROM job_runs r WHERE r.job = n.job ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) last ON true
LEFT JOIN LATERAL (
    SELECT * FROM job_runs r WHERE r.job = n.job AND r.status <> 'running'
    ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) done ON true
LEFT JOIN LATERAL (
    SELECT * FROM job_runs r WHERE r.job = n.job AND r.status = 'ok'
    ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) ok ON true
ORDER BY n.job;

-- ------------------------------------------------------------------------------------------
-- Partitions (consumer/partitions.py).

-- name: partitions_list
-- Monthly tables of conversation_history: attached, detach pending (an interrupted
-- DETACH ... CONCURRENTLY) or detached and not yet dropped (an interrupted retention run).
-- Bounds come from the partition bound itself; a detached table's from its name.
SELECT c.relname::text AS name,
       CASE WHEN i.inhrelid IS NULL THEN 'detached'
            WHEN i.inhdetachpending THEN 'detach pending'
            ELSE 'attached' END AS state,
       coalesce(b.m[1]::timestamptz,
                to_timestamp(right(c.relname, 7), 'YYYY_MM')::timestamp AT TIME ZONE 'UTC') AS lower,
       coalesce(b.m[2]::timestamptz,
                (to_timestamp(right(c.relname, 7), 'YYYY_MM')::timestamp + interval '1 month')
                    AT TIME ZONE 'UTC') AS upper,
       pg_total_relation_size(c.oid) AS bytes,
       greatest(c.reltuples, 0)::bigint AS estimated_rows
FROM pg_class c
JOIN pg_namespace ns ON ns.oid = c.relnamespace AND ns.nspname = current_schema()
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'conversation_history'::regclass
LEFT JOIN LATERAL (
    SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                        'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS m
) b ON true
WHERE c.relkind = 'r' AND c.relname ~ '^conversation_history_[0-9]{4}_[0-9]{2}$'
ORDER BY lower, name;

-- name: partition_drop
SELECT archiver_drop_partition($1, $2::text[], $3);

-- name: partition_detach_concurrently
-- The statement to run as the owner, outside any transaction block (it cannot run in one).
SELECT format('ALTER TABLE conversation_history DETACH PARTITION %I CONCURRENTLY', $1::text);

-- ------------------------------------------------------------------------------------------
-- Retention (consumer/policies.py, consumer/retention.py).

-- name: policies_list
SELECT scope, tenant_id, keep, then_action, updated_at
FROM retention_policies ORDER BY scope, tenant_id;

-- name: policy_set
INSERT INTO retention_policies AS p (scope, tenant_id, keep, then_action)
VALUES ($1, $2, $3, $4)
ON CONFLICT (scope, tenant_id) DO UPDATE
    SET keep = excluded.keep, then_action = excluded.then_action, updated_at = now()
RETURNING scope, tenant_id, keep, then_action, updated_at;

-- name: policy_unset
DELETE FROM retention_policies WHERE scope = $1 AND tenant_id = $2
RETURNING scope, tenant_id, keep, then_action, updated_at;

-- name: retention_tenants
-- Every tenant with rows in [$1, $2), by a skip scan of (tenant_id, "timestamp").
WITH RECURSIVE t AS (
    (SELECT h.tenant_id FROM conversation_history h
     WHERE h."timestamp" >= $1 AND h."timestamp" < $2 ORDER BY h.tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT h.tenant_id FROM conversation_history h
            WHERE h.tenant_id > t.tenant_id AND h."timestamp" >= $1 AND h."timestamp" < $2
            ORDER BY h.tenant_id LIMIT 1)
    FROM t WHERE t.tenant_id IS NOT NULL
)
SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL;

-- name: retention_count
-- A tenant's rows in [$2, $3): how many, in how many conversations.
SELECT count(*) AS rows, count(DISTINCT conversation_id) AS conversations
FROM conversation_history
WHERE tenant_id = $1 AND "timestamp" >= $2 AND "timestamp" < $3;

-- name: retention_census
-- What a partition's drop removes: rows and conversations per tenant in [$1, $2).
SELECT tenant_id, count(*) AS rows, count(DISTINCT conversation_id) AS conversations
FROM conversation_history
WHERE "timestamp" >= $1 AND "timestamp" < $2
GROUP BY tenant_id ORDER BY tenant_id;

-- name: retention_dropping
INSERT INTO retention_dropped (month) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: retention_dropped_months
SELECT month FROM retention_dropped ORDER BY month;

-- name: retention_touch_dropped
-- After a month's partition went: conversations that started in it need their row fixed
-- (their first message is gone). Recorded, then the month is done.
WITH touched AS (
    INSERT INTO retention_touched (tenant_id, conversation_id, month)
    SELECT tenant_id, conversation_id, $1::date FROM conversations
    WHERE started_at >= $1::date::timestamp AT TIME ZONE 'UTC'
      AND started_at < ($1::date + interval '1 month')::timestamp AT TIME ZONE 'UTC'
    ON CONFLICT DO NOTHING
    RETURNING 1
), done AS (
    DELETE FROM retention_dropped WHERE month = $1
)
SELECT count(*) FROM touched;

-- name: retention_delete_batch
-- One batch of a tenant's expired rows in [$2, $3), about $4 (see the function in 0004).
SELECT deleted AS rows, next_since AS next, touched AS conversations, exhausted
FROM archiver_retention_delete($1, $2, $3, $4);

-- name: retention_touched_batch
SELECT DISTINCT tenant_id, conversation_id FROM retention_touched
ORDER BY tenant_id, conversation_id LIMIT $1;

-- name: retention_settle_conversations
SELECT updated, removed FROM archiver_retention_settle($1::text[], $2::text[]);

-- name: release_open
-- Retention's release of an `export` tenant's month (see sql/0012_retention_releases.sql).
SELECT archiver_release_open($1, $2);

-- name: release_confirm
SELECT archiver_release_confirm($1);

-- name: release_close
SELECT archiver_release_close($1);

-- name: retention_delete_released_batch
-- One batch of a released month's rows from $2, about $3; `late` once it may not go on.
SELECT deleted AS rows, next_since AS next, touched AS conversations, exhausted, late
FROM archiver_retention_delete_released($1, $2, $3);
