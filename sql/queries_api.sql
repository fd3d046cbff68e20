-- The History API (consumer/api/) and its keys (consumer/apikeys.py). The API runs them as
-- archiver_api, whose reads row-level security limits to the tenant its transaction names
-- (sql/0007_api.sql); every read names the tenant again, so that the indexes serve it.

-- ------------------------------------------------------------------------------------------
-- Keys, managed by the schema owner (`archiver api-keys`).

-- name: api_key_create
INSERT INTO api_keys (tenant_id, name, prefix, key_hash, scopes, expires_at)
VALUES ($1, $2, $3, $4, $5::text[], now() + $6::interval)
RETURNING id, tenant_id, name, prefix, scopes, created_at, expires_at, revoked_at,
          'active' AS state;

-- name: api_keys_list
SELECT id, tenant_id, name, prefix, scopes, created_at, expires_at, revoked_at,
       CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
            WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired'
            ELSE 'active' END AS state
FROM api_keys
WHERE ($1::text IS NULL OR tenant_id = $1)
ORDER BY id;

-- name: api_key_revoke
-- Revoke a key (again: no change); no row if there is no such key.
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1
RETURNING id, tenant_id, name, prefix, scopes, created_at, expires_at, revoked_at,
          'revoked' AS state;

-- ------------------------------------------------------------------------------------------
-- The API's reads, as archiver_api.

-- name: api_authenticate
-- The key's tenant and scopes (no row: unknown, revoked or expired), and the tenant named for
-- the rest of this transaction (row-level security reads it).
SELECT k.key_id, k.tenant_id, k.scopes, set_config('archiver.tenant', k.tenant_id, true) AS tenant
FROM archiver_api_key($1) k;

-- name: api_role_problems
-- Why the connected role must not serve the API: it would see every tenant.
SELECT array_remove(ARRAY[
    CASE WHEN r.rolsuper THEN 'is a superuser' END,
    CASE WHEN r.rolbypassrls THEN 'bypasses row-level security' END,
    CASE WHEN pg_has_role(current_user, c.relowner, 'USAGE') THEN 'owns the archive''s tables' END,
    CASE WHEN pg_has_role(current_user, 'archiver_writer', 'USAGE') THEN 'holds archiver_writer' END,
    CASE WHEN pg_has_role(current_user, 'archiver_reader', 'USAGE') THEN 'holds archiver_reader' END,
    CASE WHEN NOT pg_has_role(current_user, 'archiver_api', 'USAGE') THEN 'does not hold archiver_api' END
], NULL) AS problems
FROM pg_roles r, pg_class c
WHERE r.rolname = current_user AND c.oid = 'conversation_history'::regclass;

-- name: api_ping
SELECT 1;

-- name: api_conversations_page
-- Newest first by start, keyset-paginated on (started_at, conversation_id); message counts for
-- the page's rows only, from what the archive holds now. Each row also says whether the tenant
-- has any verified export within the window (maybe_cold: an uncorrelated subquery, computed
-- once and cheap to plan); only then does the request ask api_cold_months which months are
-- cold, so that most requests spare that round trip and its planning.
SELECT p.*,
       (SELECT count(*) FROM conversation_history h
        WHERE h.tenant_id = $1 AND h.conversation_id = p.conversation_id) AS message_count,
       EXISTS (
           SELECT 1 FROM archived_partitions a
           WHERE a.table_name = 'conversation_history' AND a.tenant_id = $1 AND a.is_current
             AND a.verified_at IS NOT NULL
             AND ($4::timestamptz IS NULL OR (a.month + interval '1 month')::timestamp AT TIME ZONE 'UTC' > $4)
             AND ($5::timestamptz IS NULL OR a.month::timestamp AT TIME ZONE 'UTC' < $5)) AS maybe_cold
FROM (
    SELECT conversation_id, customer_id, user_id, started_at, ended_at
    FROM conversations
    WHERE tenant_id = $1
      AND ($2::text IS NULL OR customer_id = $2)
      AND ($3::text IS NULL OR user_id = $3)
      AND ($4::timestamptz IS NULL OR ended_at >= $4)
      AND ($5::timestamptz IS NULL OR started_at < $5)
      AND started_at IS NOT NULL
      AND ($6::timestamptz IS NULL OR (started_at, conversation_id) < ($6, $7::text))
    ORDER BY started_at DESC, conversation_id DESC
    LIMIT $8
) p
ORDER BY p.started_at DESC, p.conversation_id DESC;

-- name: api_conversation_messages_page
-- A conversation's messages in order, keyset-paginated on ("timestamp", id); each row also
-- says whether the tenant has any verified export (maybe_cold, as api_conversations_page).
SELECT id, "timestamp", message_role, message_content, metadata,
       EXISTS (
           SELECT 1 FROM archived_partitions a
           WHERE a.table_name = 'conversation_history' AND a.tenant_id = $1 AND a.is_current
             AND a.verified_at IS NOT NULL) AS maybe_cold
FROM conversation_history
WHERE tenant_id = $1 AND conversation_id = $2
  AND ($3::timestamptz IS NULL OR ("timestamp", id) > ($3, $4::bigint))
ORDER BY "timestamp", id
LIMIT $5;

-- name: api_conversation_exists
SELECT EXISTS (SELECT 1 FROM conversations WHERE tenant_id = $1 AND conversation_id = $2);

-- name: api_customer_messages_page
-- A customer's messages across conversations, in order, keyset-paginated on ("timestamp", id);
-- each row also says whether the tenant has a verified export in the window (maybe_cold, as
-- api_conversations_page).
SELECT id, conversation_id, user_id, "timestamp", message_role, message_content, metadata,
       EXISTS (
           SELECT 1 FROM archived_partitions a
           WHERE a.table_name = 'conversation_history' AND a.tenant_id = $1 AND a.is_current
             AND a.verified_at IS NOT NULL
             AND ($3::timestamptz IS NULL OR (a.month + interval '1 month')::timestamp AT TIME ZONE 'UTC' > $3)
             AND ($4::timestamptz IS NULL OR a.month::timestamp AT TIME ZONE 'UTC' < $4)) AS maybe_cold
FROM conversation_history
WHERE tenant_id = $1 AND customer_id = $2
  AND ($3::timestamptz IS NULL OR "timestamp" >= $3)
  AND ($4::timestamptz IS NULL OR "timestamp" < $4)
  AND ($5::timestamptz IS NULL OR ("timestamp", id) > ($5, $6::bigint))
ORDER BY "timestamp", id
LIMIT $7;

-- name: api_customer_exists
SELECT EXISTS (SELECT 1 FROM conversations WHERE tenant_id = $1 AND customer_id = $2);

-- name: api_user_profile
-- A user's conversation statistics (conversation_count 0: no such user in this tenant): the
-- first conversation by start, the last by end.
WITH c AS (
    SELECT conversation_id, started_at, ended_at FROM conversations
    WHERE tenant_id = $1 AND user_id = $2
), firsts AS (
    SELECT conversation_id, started_at, ended_at FROM c
    ORDER BY started_at NULLS LAST, conversation_id LIMIT 1
), lasts AS (
    SELECT conversation_id, started_at, ended_at FROM c
    ORDER BY ended_at DESC NULLS LAST, conversation_id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM c) AS conversation_count,
       (SELECT count(*) FROM c JOIN conversation_history h
          ON h.tenant_id = $1 AND h.conversation_id = c.conversation_id) AS message_count,
       f.conversation_id AS first_id, f.started_at AS first_started_at,
       f.ended_at AS first_ended_at,
       l.conversation_id AS last_id, l.started_at AS last_started_at,
       l.ended_at AS last_ended_at
FROM (SELECT 1) one LEFT JOIN firsts f ON true LEFT JOIN lasts l ON true;

-- name: api_cold_months
-- The tenant's months (YYYY-MM) whose history is only in the cold tier: a current, verified
-- export, and no row of the tenant left in the warm archive for that month; within the
-- request's window when it has one. Asked only when a page's maybe_cold says there may be
-- some (the same filters on archived_partitions: keep them alike), or the page is empty.
SELECT to_char(a.month, 'YYYY-MM') AS month
FROM archived_partitions a
WHERE a.table_name = 'conversation_history' AND a.tenant_id = $1 AND a.is_current
  AND a.verified_at IS NOT NULL
  AND ($2::timestamptz IS NULL OR (a.month + interval '1 month')::timestamp AT TIME ZONE 'UTC' > $2)
  AND ($3::timestamptz IS NULL OR a.month::timestamp AT TIME ZONE 'UTC' < $3)
  AND NOT EXISTS (
      SELECT 1 FROM conversation_history h
      WHERE h.tenant_id = a.tenant_id
        AND h."timestamp" >= a.month::timestamp AT TIME ZONE 'UTC'
        AND h."timestamp" < (a.month + interval '1 month')::timestamp AT TIME ZONE 'UTC')
ORDER BY a.month;
