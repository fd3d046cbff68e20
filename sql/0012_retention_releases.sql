-- Retention's releases: a tenant's month whose policy is `export` is deleted (or its partition
-- dropped) only while PostgreSQL holds exactly the rows a verified cold copy holds, not only
-- when the plan looked. Without this, a row archived into the month between the plan and the
-- delete (a late checkpoint) would be deleted with no cold copy.
--
-- The protocol, each step its own transaction:
--   1. open: take the erasure lock exclusively (0006; every archive batch holds it shared from
--      its first statement to its commit), so that every batch in flight has committed, and
--      record the release. Every later batch sees the release: insert_messages (queries.sql)
--      marks it `late` in the statement that inserts a new row of that tenant's month, holding
--      the release's row lock until the batch commits.
--   2. confirm: the month's rows now (count, content digest) against the current, verified
--      export; a match records its export_id. Rows that arrived before open are seen here.
--   3. delete in batches (archiver_retention_delete_released) or drop the partition
--      (archiver_drop_partition): each first locks the release in share mode, so it waits for
--      a batch that marked it late and then sees `late`, and a batch that marks it later waits
--      for the delete to commit, whose snapshot therefore never held that batch's rows. A late
--      release stops deleting: the rest of the month stays until the next run exports again.
--   4. close: the release is removed. One left by a killed run is replaced by the next open.
-- The functions below enforce it: the writer cannot delete an `export` tenant's rows, nor drop
-- a partition holding them, but through a confirmed release that is not late.

CREATE TABLE retention_releases (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text        NOT NULL,
    month      date        NOT NULL CHECK (extract(day FROM month) = 1),
    export_id  text,                           -- the verified export confirmed to cover it
    late       boolean     NOT NULL DEFAULT false,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, month)
);
-- The archive path marks releases late (insert_messages); everything else goes through the
-- functions below.
GRANT SELECT, UPDATE (late) ON retention_releases TO archiver_writer;

-- Whether a tenant's policy keeps expired rows in the cold tier.
CREATE FUNCTION archiver_retention_exports(tenant text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((
        SELECT p.then_action = 'export' FROM retention_policies p
        WHERE (p.scope = 'tenant' AND p.tenant_id = tenant) OR p.scope = 'default'
        ORDER BY p.scope DESC
        LIMIT 1
    ), false)
$$;

-- Whether the tenant's rows of the month may go now: always for a `delete` policy; for
-- `export`, a confirmed release that is not late and whose export is still current and
-- verified. Lock the release first (FOR SHARE) where rows are about to be deleted.
CREATE FUNCTION archiver_retention_released(tenant text, month_start date) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT archiver_retention_exports(tenant) OR EXISTS (
        SELECT 1 FROM retention_releases r
        JOIN archived_partitions a ON a.export_id = r.export_id
        WHERE r.tenant_id = tenant AND r.month = month_start AND NOT r.late
          AND a.is_current AND a.verified_at IS NOT NULL
    )
$$;

-- 1. Open a release of a tenant's month wholly past its `export` policy's cutoff.
CREATE FUNCTION archiver_release_open(tenant text, month_start date) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    opened bigint;
BEGIN
    IF NOT archiver_retention_exports(tenant)
       OR NOT ((month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC'
                   <= archiver_retention_cutoff(tenant)) THEN
        RAISE EXCEPTION 'archiver_release_open: % of tenant % is not past an export policy',
            month_start, tenant USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('archiver_erasure', 0));
    DELETE FROM retention_releases WHERE tenant_id = tenant AND month = month_start;
    INSERT INTO retention_releases (tenant_id, month) VALUES (tenant, month_start)
    RETURNING id INTO opened;
    RETURN opened;
END;
$$;

-- 2. Confirm it: NULL once the month's rows now are exactly its current verified export's
-- (then recorded), else why not.
CREATE FUNCTION archiver_release_confirm(release bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    r retention_releases;
    a archived_partitions;
    rows_now bigint;
    digest_now text;
BEGIN
    SELECT * INTO r FROM retention_releases WHERE id = release FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'released by another run';
    ELSIF r.late THEN
        RETURN 'rows arrived during this run (the next run exports them first)';
    END IF;
    SELECT * INTO a FROM archived_partitions
    WHERE table_name = 'conversation_history' AND tenant_id = r.tenant_id AND month = r.month
      AND is_current;
    IF NOT FOUND OR a.verified_at IS NULL THEN
        RETURN 'no verified cold copy';
    END IF;
    -- the same count and digest as cold_month_stats (queries_cold.sql)
    SELECT count(*),
           coalesce(sum(('x' || left(md5(h.conversation_id || E'\x1f' || h.message_key || E'\x1f'
                         || (extract(epoch FROM h."timestamp") * 1000000)::bigint::text), 16)
                        )::bit(64)::bigint::numeric), 0)::text
    INTO rows_now, digest_now
    FROM conversation_history h
    WHERE h.tenant_id = r.tenant_id AND h."timestamp" >= r.month::timestamp AT TIME ZONE 'UTC'
      AND h."timestamp" < (r.month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    IF (rows_now, digest_now) IS DISTINCT FROM (a.row_count, a.content_digest) THEN
        RETURN 'rows changed since its cold copy (the next run exports them first)';
    END IF;
    UPDATE retention_releases SET export_id = a.export_id WHERE id = release;
    RETURN NULL;
END;
$$;

-- 4. Close it.
CREATE FUNCTION archiver_release_close(release bigint) RETURNS void
LANGUAGE sql SECURITY DEFINER AS $$
    DELETE FROM retention_releases WHERE id = release
$$;

-- The batched delete of 0004, now refusing `export` tenants: their rows go only through a
-- release (archiver_retention_delete_released). The body is the same.
ALTER FUNCTION archiver_retention_delete(text, timestamptz, timestamptz, integer)
    RENAME TO archiver_retention_delete_span;
REVOKE ALL ON FUNCTION archiver_retention_delete_span(text, timestamptz, timestamptz, integer)
    FROM archiver_writer;

CREATE FUNCTION archiver_retention_delete(
    tenant text, since timestamptz, until timestamptz, batch_size integer
) RETURNS TABLE (deleted bigint, next_since timestamptz, touched bigint, exhausted boolean)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF archiver_retention_exports(tenant) THEN
        RAISE EXCEPTION 'archiver_retention_delete: tenant % keeps its rows in the cold tier:'
            ' delete them through a release', tenant USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT * FROM archiver_retention_delete_span(tenant, since, until, batch_size);
END;
$$;

-- 3. One batch of a released month's rows from `since`; `late` (and nothing deleted) once the
-- release no longer lets them go.
CREATE FUNCTION archiver_retention_delete_released(
    release bigint, since timestamptz, batch_size integer
) RETURNS TABLE (deleted bigint, next_since timestamptz, touched bigint, exhausted boolean,
                 late boolean)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    r retention_releases;
BEGIN
    SELECT * INTO r FROM retention_releases WHERE id = release FOR SHARE;
    IF NOT FOUND OR NOT archiver_retention_released(r.tenant_id, r.month) THEN
        RETURN QUERY SELECT 0::bigint, since, 0::bigint, true, true;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT d.*, false FROM archiver_retention_delete_span(
        r.tenant_id, greatest(since, r.month::timestamp AT TIME ZONE 'UTC'),
        (r.month + interval '1 month')::timestamp AT TIME ZONE 'UTC', batch_size) AS d;
END;
$$;

-- 0004's drop, now also keeping a month that holds rows of an `export` tenant without a
-- confirmed release that is still not late (checked once no batch can insert into it).
CREATE OR REPLACE FUNCTION archiver_drop_partition(partition_name text, allowed text[], wait_ms integer)
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
    -- the releases of the month, locked: a batch that marked one late has committed
    PERFORM 1 FROM retention_releases r WHERE r.month = month_start::date FOR SHARE;
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
               OR coalesce(archiver_retention_cutoff(tenant_id) < $2, true)
               OR NOT archiver_retention_released(tenant_id, $3))$q$, partition_name)
    INTO strangers
    USING coalesce(allowed, '{}'::text[]), month_start + interval '1 month', month_start::date;
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

DO $$
DECLARE
    signature text;
BEGIN
    FOREACH signature IN ARRAY ARRAY[
        'archiver_retention_exports(text)',
        'archiver_retention_released(text, date)',
        'archiver_release_open(text, date)',
        'archiver_release_confirm(bigint)',
        'archiver_release_close(bigint)',
        'archiver_retention_delete(text, timestamptz, timestamptz, integer)',
        'archiver_retention_delete_released(bigint, timestamptz, integer)',
        'archiver_drop_partition(text, text[], integer)'  -- CREATE OR REPLACE reset it
    ] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       signature, current_schema());
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', signature);
    END LOOP;
END;
$$;
GRANT EXECUTE ON FUNCTION archiver_release_open(text, date), archiver_release_confirm(bigint),
    archiver_release_close(bigint),
    archiver_retention_delete(text, timestamptz, timestamptz, integer),
    archiver_retention_delete_released(bigint, timestamptz, integer) TO archiver_writer;
