-- Retention per tenant, the periodic jobs' leases and runs, and the partition DDL that
-- retention and maintenance may ask for without owning conversation_history.
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

-- Detach and drop one monthly partition of conversation_history wholly before the current
-- month (never the current or a later one), as the owner of the table, if every tenant with
-- rows in it is in `allowed` (the tenants whose retention lets the whole month go, as the
-- caller planned it). Returns 'dropped', 'absent' (nothing to drop), or 'kept': a tenant not
-- in `allowed` has rows in it now (archived since the plan); the partition then stays, or is
-- attached again if an interrupted DETACH ... CONCURRENTLY had taken it out.
--
-- A plain DETACH takes an ACCESS EXCLUSIVE lock on conversation_history, so archiving waits
-- behind it: `wait_ms` bounds each wait for a lock (lock_timeout; the caller retries later).
-- A partition left "detach pending" by an interrupted DETACH ... CONCURRENTLY is finalized
-- (no ACCESS EXCLUSIVE lock on conversation_history); one already detached is checked, dropped.
CREATE FUNCTION archiver_drop_partition(partition_name text, allowed text[], wait_ms integer)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
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
    -- the tenants in it, by a skip scan of its (tenant_id, "timestamp") index
    EXECUTE format($q$
        WITH RECURSIVE t AS (
            (SELECT tenant_id FROM %1$I ORDER BY tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT h.tenant_id FROM %1$I h WHERE h.tenant_id > t.tenant_id
                    ORDER BY h.tenant_id LIMIT 1)
            FROM t WHERE t.tenant_id IS NOT NULL
        )
        SELECT array_agg(tenant_id) FROM t
        WHERE tenant_id IS NOT NULL AND NOT (tenant_id = ANY($1))$q$, partition_name)
    INTO strangers USING coalesce(allowed, '{}'::text[]);
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
REVOKE ALL ON FUNCTION archiver_drop_partition(text, text[], integer) FROM PUBLIC;
