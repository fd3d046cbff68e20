-- Erasure (consumer/fences.py, consumer/erasure/): named queries. The tables and functions are
-- in sql/0006_erasure.sql.

-- name: erasure_fence
-- The archive batch's fence: takes the erasure lock in shared mode, then looks (see 0006).
SELECT tenant_id, kind, subject_hash, requested_at FROM archiver_erasure_fence($1, $2, $3);

-- name: erasure_lock
-- Taken by a tombstone (and by a step adding fences): waits for every archive batch holding the
-- lock in shared mode to commit, and holds off new ones until this transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended('archiver_erasure', 0));

-- name: erasure_insert
-- The tombstone; requested_at by PostgreSQL's clock, read once the lock is held.
INSERT INTO erasures (tenant_id, kind, subject_hash, requested_at, reason)
VALUES ($1, $2, $3, clock_timestamp(), $4)
RETURNING id, requested_at;

-- name: erasure_fences_insert
-- Fences of erasure $4 (requested at $5): tenant $1, one per (kind, hash) of $2, $3.
INSERT INTO erasure_fences (tenant_id, kind, subject_hash, erasure_id, requested_at)
SELECT $1, t.kind, t.subject_hash, $4, $5
FROM unnest($2::text[], $3::text[]) AS t(kind, subject_hash)
ON CONFLICT DO NOTHING;

-- name: erasure_work_insert
INSERT INTO erasure_work (erasure_id, subject, conversations) VALUES ($1, $2, $3);

-- name: erasure_work_conversations
UPDATE erasure_work SET conversations = $2 WHERE erasure_id = $1;

-- name: erasure_get
SELECT e.id, e.tenant_id, e.kind, e.subject_hash, e.requested_at, e.reason, e.status, e.step,
       e.counts, e.error, e.updated_at, e.completed_at, w.subject, w.conversations
FROM erasures e LEFT JOIN erasure_work w ON w.erasure_id = e.id
WHERE e.id = $1;

-- name: erasure_list
-- Newest first, keyset-paginated on id.
SELECT id, tenant_id, kind, subject_hash, requested_at, reason, status, step, counts, error,
       updated_at, completed_at, NULL::text AS subject, NULL::text[] AS conversations
FROM erasures
WHERE ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $1;

-- name: erasure_unfinished
SELECT id FROM erasures WHERE status <> 'completed' ORDER BY id;

-- name: erasure_step_done
-- Step $3 done: the next is $4, its counts merged in. Nothing if another run moved it on.
UPDATE erasures
SET step = $4, counts = counts || $2::jsonb, error = NULL, updated_at = clock_timestamp()
WHERE id = $1 AND step = $3 AND status <> 'completed';

-- name: erasure_failed
UPDATE erasures SET error = $2, updated_at = clock_timestamp() WHERE id = $1;

-- name: erasure_complete
-- The subject's id goes with the working state, in the transaction that completes it.
WITH gone AS (
    DELETE FROM erasure_work WHERE erasure_id = $1
)
UPDATE erasures
SET status = 'completed', completed_at = clock_timestamp(), updated_at = clock_timestamp(),
    error = NULL
WHERE id = $1 AND step = 'done' AND status <> 'completed';

-- name: erasure_conversations_of_customer
-- The customer's conversations: those its conversation rows and its messages name.
SELECT conversation_id FROM conversations WHERE tenant_id = $1 AND customer_id = $2
UNION
SELECT DISTINCT conversation_id FROM conversation_history WHERE tenant_id = $1 AND customer_id = $2;

-- name: erasure_conversations_of_user
SELECT conversation_id FROM conversations WHERE tenant_id = $1 AND user_id = $2
UNION
SELECT DISTINCT conversation_id FROM conversation_history WHERE tenant_id = $1 AND user_id = $2;

-- name: erasure_history_delete
-- One batch of the subject's rows (see archiver_erase_history in 0006).
SELECT archiver_erase_history($1, $2, $3, $4);

-- name: erasure_settle
-- The subject's conversation rows: removed when no message is left, else started_at moved on.
SELECT updated, removed FROM archiver_retention_settle($1::text[], $2::text[]);

-- name: erasure_dead_letters_page
SELECT id, source_key, raw, truncated FROM archive_dead_letters
WHERE id > $1 ORDER BY id LIMIT $2;

-- name: erasure_dead_letters_delete
SELECT archiver_erase_dead_letters($1, $2);

-- ------------------------------------------------------------------------------------------
-- Verification (`archiver erase --verify`): independent counts of what is left.

-- name: erasure_left_history
-- The subject's messages stamped at or before $2: its conversations' ($3), and those naming it
-- as customer ($4) or user ($5).
SELECT count(*) FROM conversation_history
WHERE tenant_id = $1 AND "timestamp" <= $2
  AND (conversation_id = ANY($3::text[]) OR customer_id = $4 OR user_id = $5);

-- name: erasure_left_conversations
-- Conversation rows of the subject that still reach back to before the erasure.
SELECT count(*) FROM conversations
WHERE tenant_id = $1
  AND (customer_id = $2 OR user_id = $3 OR conversation_id = ANY($4::text[]))
  AND (started_at IS NULL OR started_at <= $5);

-- name: erasure_left_elsewhere
-- Every other table of the schema this role may read, each text-like column searched for the
-- subject id as a whole word (not inside a longer id). Not conversation_history (its partitions
-- included), conversations and archive_dead_letters (counted above, the last one decoded),
-- nor erasure_fences and erasure_work (the erasure's own, checked by status).
WITH pattern AS (
    SELECT '(^|[^A-Za-z0-9_.@-])'
           || regexp_replace($1::text, '([^A-Za-z0-9])', '\\\1', 'g')
           || '($|[^A-Za-z0-9_.@-])' AS p
), cols AS (
    SELECT c.table_name,
           string_agg(format('%I::text ~ %L', c.column_name, pattern.p), ' OR ') AS cond
    FROM information_schema.columns c
    JOIN information_schema.tables t
      ON t.table_schema = c.table_schema AND t.table_name = c.table_name
    CROSS JOIN pattern
    WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
      AND c.data_type IN ('text', 'jsonb', 'json', 'character varying', 'ARRAY')
      AND c.table_name !~ '^conversation_history'
      AND c.table_name NOT IN ('conversations', 'archive_dead_letters', 'erasure_fences',
                               'erasure_work')
      AND has_table_privilege(format('%I.%I', c.table_schema, c.table_name), 'SELECT')
    GROUP BY c.table_name
)
SELECT table_name::text AS place,
       (xpath('/row/n/text()',
              query_to_xml(format('SELECT count(*) AS n FROM %I WHERE %s', table_name, cond),
                           false, true, '')))[1]::text::bigint AS n
FROM cols
ORDER BY 1;

-- name: erasure_cold_left
-- DuckDB, over the cold tier's current files (consumer/cold/query.py's view): the subject's rows
-- stamped at or before the erasure. Parameters: tenant, requested_at, customer, user (NULL
-- unless that kind), the subject's conversations.
SELECT count(*) FROM conversation_history
WHERE tenant_id = ? AND "timestamp" <= ?
  AND (customer_id = ? OR user_id = ? OR list_contains(?, conversation_id))
