-- Retention per tenant and the periodic jobs' leases and runs.
--
-- The archiver's role (archiver_writer, 0003) still deletes nothing itself and owns nothing:
-- it reads the policies and asks functions of the migration owner (SECURITY DEFINER, fixed
-- search_path) to delete rows, settle conversations and drop partitions; each function checks
-- the tenant's policy itself, so that role can only ever remove what a policy lets go.
-- Changing a policy is the owner's (an administrator's) act: the writer may only read them.
--
-- Applying it builds an index over conversation_history: on a large archive that takes a
-- while and blocks archiving meanwhile (batches wait, then are held in Redis and retried,
-- never dead-lettered). Apply it in a quiet hour.

-- What to keep. One optional default row (scope 'default', tenant_id '') and one optional row
-- per tenant; a tenant without its own row follows the default; with neither, nothing of it
-- is ever deleted. `then_action`: 'delete' expired rows, or 'export' (delete them only once a
-- verified copy exists in the cold tier).
CREATE TABLE retention_policies (
    scope        text        NOT NULL CHECK (scope IN ('default', 'tenant')),
    tenant_id    text        NOT NULL DEFAULT '',
    keep         interval    NOT NULL CHECK (keep > interval '0'),
    then_action  text        NOT NULL DEFAULT 'delete' CHECK (then_action IN ('delete', 'export')),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, tenant_id),
    CHECK ((scope = 'default') = (tenant_id = ''))
);

-- Every run of a periodic job, whoever ran it (`archiver run` on schedule, or by hand).
CREATE TABLE job_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          text        NOT NULL,
    trigger      text        NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    holder       text        NOT NULL,
    slot         timestamptz,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    status       text        NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    counts       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error        text
);
CREATE INDEX job_runs_recent ON job_runs (job, started_at DESC, id DESC);

-- One row per job: who holds it until when (by PostgreSQL's clock, so a crashed holder's
-- lease simply runs out), the run it is doing, and the last scheduled time claimed.
CREATE TABLE job_leases (
    job         text PRIMARY KEY,
    holder      text,
    expires_at  timestamptz,
    run_id      bigint REFERENCES job_runs (id),
    last_slot   timestamptz
);

-- Retention's work in progress, committed with the deletes that cause it, so that a killed run
-- leaves what the next one must finish: conversations whose rows went (their `conversations`
-- row is then updated or removed), and months whose partition is being dropped.
CREATE TABLE retention_touched (
    tenant_id        text NOT NULL,
    conversation_id  text NOT NULL,
    month            date NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, month)
);
CREATE TABLE retention_dropped (
    month  date PRIMARY KEY
);

-- Per-tenant batched deletes walk a tenant's rows oldest first.
CREATE INDEX conversation_history_tenant_time ON conversation_history (tenant_id, "timestamp");

-- A tenant's cutoff now: its policy's, else the default's (NULL: keep everything).
CREATE FUNCTION archiver_retention_cutoff(tenant text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT now() - p.keep FROM retention_policies p
    WHERE (p.scope = 'tenant' AND p.tenant_id = tenant) OR p.scope = 'default'
    ORDER BY p.scope DESC
    LIMIT 1
$$;

-- One batch of a tenant's rows in [since, until), oldest first: the next batch_size of them
-- (and any more at the same microsecond), never a row younger than the tenant's cutoff now.
-- A batch is a range of (tenant_id, "timestamp"): its end is found by walking that index
-- batch_size entries, then the range is deleted through the same index, so a batch reads only
-- what it deletes. Rows of transactions not yet committed are invisible, so a row the archiver
-- is inserting is never deleted. The conversations it touched are recorded in the same
-- transaction (retention_touched), for their rows to be settled after. Returns the rows
-- deleted, where the next batch starts, the conversations newly recorded, and whether the
-- range is done.
CREATE FUNCTION archiver_retention_delete(
    tenant text, since timestamptz, until timestamptz, batch_size integer
) RETURNS TABLE (deleted bigint, next_since timestamptz, touched bigint, exhausted boolean)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    cutoff timestamptz := archiver_retention_cutoff(tenant);
    stop timestamptz;
    edge timestamptz;
BEGIN
    IF cutoff IS NULL THEN
        RAISE EXCEPTION 'archiver_retention_delete: tenant % has no retention policy', tenant
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    stop := least(until, cutoff);
    SELECT h."timestamp" INTO edge FROM conversation_history h
    WHERE h.tenant_id = tenant AND h."timestamp" >= since AND h."timestamp" < stop
    ORDER BY h."timestamp" OFFSET greatest(batch_size, 1) - 1 LIMIT 1;
    IF edge IS NOT NULL THEN
        stop := least(stop, edge + interval '1 microsecond');
    END IF;
    RETURN QUERY
    WITH gone AS (
        DELETE FROM conversation_history h
        WHERE h.tenant_id = tenant AND h."timestamp" >= since AND h."timestamp" < stop
        RETURNING h.conversation_id, h."timestamp"
    ), marked AS (
        INSERT INTO retention_touched AS r (tenant_id, conversation_id, month)
        SELECT DISTINCT tenant, g.conversation_id,
               date_trunc('month', g."timestamp" AT TIME ZONE 'UTC')::date
        FROM gone g
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), stop, (SELECT count(*) FROM marked), edge IS NULL;
END;
$$;

-- Settle conversations whose rows retention deleted: started_at becomes the first message
-- left, and a conversation with none left loses its row. The rows are locked first, in key
-- order as the archiver's upsert locks them (the two never deadlock); the next statement's
-- snapshot then sees every archive batch that held one of them before.
CREATE FUNCTION archiver_retention_settle(tenants text[], conversation_ids text[])
RETURNS TABLE (updated bigint, removed bigint)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    PERFORM 1 FROM conversations c
    JOIN unnest(tenants, conversation_ids) AS t(tenant_id, conversation_id)
      ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
    ORDER BY c.tenant_id, c.conversation_id
    FOR UPDATE OF c;
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(tenants, conversation_ids) AS t(tenant_id, conversation_id)
    ), firsts AS (
        SELECT i.tenant_id, i.conversation_id,
               (SELECT min(h."timestamp") FROM conversation_history h
                WHERE h.conversation_id = i.conversation_id AND h.tenant_id = i.tenant_id) AS first
        FROM input i
    ), changed AS (
        UPDATE conversations c SET started_at = f.first
        FROM firsts f
        WHERE c.tenant_id = f.tenant_id AND c.conversation_id = f.conversation_id
          AND f.first IS NOT NULL AND c.started_at IS DISTINCT FROM f.first
        RETURNING 1
    ), gone AS (
        DELETE FROM conversations c USING firsts f
        WHERE c.tenant_id = f.tenant_id AND c.conversation_id = f.conversation_id
          AND f.first IS NULL
        RETURNING 1
    ), done AS (
        DELETE FROM retention_touched r USING input i
        WHERE r.tenant_id = i.tenant_id AND r.conversation_id = i.conversation_id
    )
    SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM gone);
END;
$$;

-- Detach and drop one monthly partition of conversation_history wholly before the current
-- month (never the current or a later one), if every tenant with rows in it is in `allowed`
-- (the tenants the caller planned to let the whole month go) and its policy lets the whole
-- month go now. Returns 'dropped', 'absent' (nothing to drop), or 'kept': some tenant does not
-- (its rows arrived since the plan, say); the partition then stays, or is attached again if
-- an interrupted DETACH ... CONCURRENTLY had taken it out.
--
-- A plain DETACH takes an ACCESS EXCLUSIVE lock on conversation_history, so archiving waits
-- behind it: `wait_ms` bounds each wait for a lock (lock_timeout; the caller retries later).
-- A partition left "detach pending" by an interrupted DETACH ... CONCURRENTLY is finalized
-- (no ACCESS EXCLUSIVE lock on conversation_history); one already detached is checked, dropped.
CREATE FUNCTION archiver_drop_partition(partition_name text, allowed text[], wait_ms integer)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    part regclass;
    month_start timestamptz;
    pending boolean;
    attached boolean;
    strangers text[];
BEGIN
    IF partition_name !~ '^conversation_history_[0-9]{4}_[0-9]{2}$' THEN
        RAISE EXCEPTION 'archiver_drop_partition: % is not a monthly partition', partition_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    month_start := to_timestamp(right(partition_name, 7), 'YYYY_MM')::timestamp AT TIME ZONE 'UTC';
    IF month_start + interval '1 month' > date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' THEN
        RAISE EXCEPTION 'archiver_drop_partition: refused to drop %: it is not wholly in the past',
            partition_name USING ERRCODE = 'invalid_parameter_value';
    END IF;
    part := to_regclass(partition_name);
    IF part IS NULL THEN
        RETURN 'absent';
    END IF;
    PERFORM set_config('lock_timeout', greatest(wait_ms, 1) || 'ms', true);
    SELECT i.inhdetachpending INTO pending FROM pg_inherits i
    WHERE i.inhrelid = part AND i.inhparent = 'conversation_history'::regclass;
    attached := FOUND AND NOT pending;
    IF attached THEN
        -- no new rows in this month until we are done; archiving of other months goes on
        EXECUTE format('LOCK TABLE %I IN SHARE MODE', partition_name);
    ELSIF pending THEN
        EXECUTE format('ALTER TABLE conversation_history DETACH PARTITION %I FINALIZE', partition_name);
    END IF;
    -- the tenants in it (a skip scan of its (tenant_id, "timestamp") index) that may not go
    EXECUTE format($q$
        WITH RECURSIVE t AS (
            (SELECT tenant_id FROM %1$I ORDER BY tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT h.tenant_id FROM %1$I h WHERE h.tenant_id > t.tenant_id
                    ORDER BY h.tenant_id LIMIT 1)
            FROM t WHERE t.tenant_id IS NOT NULL
        )
        SELECT array_agg(tenant_id) FROM t
        WHERE tenant_id IS NOT NULL
          AND (NOT (tenant_id = ANY($1))
               OR coalesce(archiver_retention_cutoff(tenant_id) < $2, true))$q$, partition_name)
    INTO strangers USING coalesce(allowed, '{}'::text[]), month_start + interval '1 month';
    IF strangers IS NOT NULL THEN
        IF NOT attached THEN
            EXECUTE format(
                'ALTER TABLE conversation_history ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                partition_name, month_start, month_start + interval '1 month');
        END IF;
        RETURN 'kept';
    END IF;
    IF attached THEN
        EXECUTE format('ALTER TABLE conversation_history DETACH PARTITION %I', partition_name);
    END IF;
    EXECUTE format('DROP TABLE %I', partition_name);
    RETURN 'dropped';
END;
$$;

-- Like archiver_ensure_partition (0003): the owner's rights, a fixed search_path (the schema's
-- objects, never the caller's temporary ones), and only the writer may call them.
DO $$
DECLARE
    signature text;
BEGIN
    FOREACH signature IN ARRAY ARRAY[
        'archiver_retention_cutoff(text)',
        'archiver_retention_delete(text, timestamptz, timestamptz, integer)',
        'archiver_retention_settle(text[], text[])',
        'archiver_drop_partition(text, text[], integer)'
    ] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       signature, current_schema());
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', signature);
    END LOOP;
END;
$$;
GRANT EXECUTE ON FUNCTION archiver_retention_delete(text, timestamptz, timestamptz, integer),
    archiver_retention_settle(text[], text[]),
    archiver_drop_partition(text, text[], integer) TO archiver_writer;

-- The writer runs the jobs (their leases and runs), reads the policies (never changes them),
-- and keeps retention's own bookkeeping.
GRANT SELECT, INSERT, UPDATE ON job_runs, job_leases TO archiver_writer;
GRANT SELECT ON retention_policies TO archiver_writer;
GRANT SELECT, INSERT, DELETE ON retention_touched, retention_dropped TO archiver_writer;
