-- Least privilege: the archiver runs as a role that owns nothing.
--
-- Three kinds of role:
--   * the migration owner: whoever runs `archiver migrate`; owns every table and function.
--   * archiver_writer (NOLOGIN group): what `archiver run` and `archiver sweep` need; an
--     operator grants it to the login role the service uses: GRANT archiver_writer TO app;
--   * archiver_reader (NOLOGIN group): read-only access to the archive, for readers such as
--     the history API.
-- Roles are cluster-wide: they are created once (if missing) and shared by every database.
-- Creating them needs CREATEROLE; a migration owner without it gets a clear error and an
-- administrator creates them first (CREATE ROLE archiver_writer NOLOGIN; ... reader ...).

DO $$
DECLARE
    wanted text;
BEGIN
    FOREACH wanted IN ARRAY ARRAY['archiver_writer', 'archiver_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = wanted) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', wanted);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist and % may not create roles', wanted, current_user
                    USING HINT = format('as an administrator: CREATE ROLE %I NOLOGIN; then run archiver migrate again', wanted);
            END;
        END IF;
    END LOOP;
END;
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO archiver_writer', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO archiver_reader', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO archiver_writer, archiver_reader', current_schema());
END;
$$;

-- The writer checks the schema version, archives (upserting conversations, back-filling a
-- late customer id, a temporary staging table per connection), records runs and dead letters,
-- and resolves replayed dead letters. It deletes nothing.
GRANT SELECT ON schema_migrations TO archiver_writer, archiver_reader;
GRANT SELECT, INSERT, UPDATE ON conversation_history, conversations, archive_runs,
    archive_dead_letters TO archiver_writer;
GRANT SELECT ON conversation_history, conversations TO archiver_reader;

-- Month partitions are created by a function that runs with its owner's rights (only a
-- table's owner may attach a partition to it), with a fixed search_path so that no object
-- of the caller's can stand in for ours; the new partition goes into the parent's schema.
-- Only the writer may call it.
CREATE OR REPLACE FUNCTION archiver_ensure_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    parent regclass := 'conversation_history'::regclass;
    schema text := (SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = parent);
    month_start timestamptz := date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := format('conversation_history_%s', to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'));
BEGIN
    IF to_regclass(format('%s.%I', schema, name)) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('archiver_ensure_partition'));
    BEGIN
        EXECUTE format(
            'CREATE TABLE %s.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
            schema, name, parent, month_start, month_start + interval '1 month');
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        NULL;  -- another archiver created it first
    END;
    RETURN name;
END;
$$;
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION archiver_ensure_partition(timestamptz) SECURITY DEFINER'
        ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
END;
$$;
REVOKE ALL ON FUNCTION archiver_ensure_partition(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION archiver_ensure_partition(timestamptz) TO archiver_writer;
