-- Erasure (the right to be forgotten) of one customer, user or conversation of a tenant, and the
-- fence that keeps the archive path from bringing it back (issue 15).
--
-- The audit trail holds no personal data: a subject is named by a keyed hash, HMAC-SHA256 with
-- the secret ARCHIVER_ERASURE_KEY of (tenant, kind, subject id), hex. Without the key a hash
-- cannot be tied back to an id (ids are guessable: a plain hash would not protect them).
-- `reason` is free text the operator gives: it must not name the subject (README, Erasure).
CREATE TABLE erasures (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('customer', 'user', 'conversation')),
    subject_hash  text        NOT NULL,
    requested_at  timestamptz NOT NULL,
    reason        text        NOT NULL DEFAULT '',
    status        text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed')),
    -- the next step to run: steps are done in this order, each idempotent
    step          text        NOT NULL DEFAULT 'redis'
        CHECK (step IN ('redis', 'postgres', 'cold', 'done')),
    counts        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error         text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
CREATE INDEX erasures_unfinished ON erasures (id) WHERE status <> 'completed';
CREATE INDEX erasures_subject ON erasures (tenant_id, subject_hash);

-- An unfinished erasure's working state: the subject id itself and the conversations it had,
-- which the steps must know to find its data, and which a resumed run (`archiver erase
-- --resume`, the `erasure` job) reads back. The row goes in the transaction that completes the
-- erasure: from then on nothing names the subject in clear.
CREATE TABLE erasure_work (
    erasure_id     bigint PRIMARY KEY REFERENCES erasures (id),
    subject        text   NOT NULL,
    conversations  text[] NOT NULL DEFAULT '{}'
);

-- What the archive path refuses: messages of (tenant, kind, subject_hash) stamped at or before
-- requested_at. One row for the erasure's own subject, one per conversation the subject had
-- when it was requested (a later checkpoint of such a conversation may not name the customer).
CREATE TABLE erasure_fences (
    tenant_id     text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('customer', 'user', 'conversation')),
    subject_hash  text        NOT NULL,
    erasure_id    bigint      NOT NULL REFERENCES erasures (id),
    requested_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, subject_hash, kind, erasure_id)
);

-- The fence of one archive batch: the latest requested_at of each of the batch's subjects
-- (tenant, kind, keyed hash) that has one. Called first in the batch's transaction: it takes
-- the erasure lock in shared mode (batches never wait for each other), then looks, in a
-- statement of its own (a VOLATILE function's statements each take a new snapshot), so that an
-- erasure's tombstone, which takes the lock exclusively, either committed before and is seen,
-- or waits until this batch has committed and its PostgreSQL step then deletes what it wrote.
-- `hashes` NULL (an archiver without ARCHIVER_ERASURE_KEY): any fence of these tenants, with
-- kind and subject_hash NULL, so that the caller holds the batch instead of guessing.
CREATE FUNCTION archiver_erasure_fence(tenants text[], kinds text[], hashes text[])
RETURNS TABLE (tenant_id text, kind text, subject_hash text, requested_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('archiver_erasure', 0));
    IF hashes IS NULL THEN
        RETURN QUERY
        SELECT f.tenant_id, NULL::text, NULL::text, max(f.requested_at)
        FROM erasure_fences f WHERE f.tenant_id = ANY(tenants)
        GROUP BY f.tenant_id;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT f.tenant_id, f.kind, f.subject_hash, max(f.requested_at)
    FROM unnest(tenants, kinds, hashes) AS s(tenant_id, kind, subject_hash)
    JOIN erasure_fences f
      ON f.tenant_id = s.tenant_id AND f.subject_hash = s.subject_hash AND f.kind = s.kind
    GROUP BY f.tenant_id, f.kind, f.subject_hash;
END;
$$;

-- Whether a row belongs to the subject of an erasure in progress (stamped at or before its
-- requested_at): what a restore from the cold tier leaves out (queries_cold.sql,
-- cold_restore_insert), until the erasure's cold step has rewritten the files without it.
CREATE FUNCTION archiver_erasing(
    tenant text, customer text, usr text, conversation text, ts timestamptz
) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM erasures e JOIN erasure_work w ON w.erasure_id = e.id
        WHERE e.tenant_id = tenant AND e.status <> 'completed' AND ts <= e.requested_at
          AND ((e.kind = 'customer' AND w.subject = customer)
               OR (e.kind = 'user' AND w.subject = usr)
               OR (e.kind = 'conversation' AND w.subject = conversation)
               OR conversation = ANY(w.conversations))
    )
$$;

-- The archiver's role deletes nothing itself: an erasure's PostgreSQL step asks these functions
-- of the migration owner (SECURITY DEFINER, fixed search_path), which delete only for an
-- erasure that is recorded and not completed, only in its tenant and only what is stamped at
-- or before its requested_at. Every deletion is thus tied to a row of the audit trail.

-- Up to batch_size rows of conversation_history: the subject's own (by customer_id or user_id,
-- through their indexes) and those of `conversation_ids` (the subject's conversations, or the
-- conversation itself). Returns how many went; 0 when none are left.
CREATE FUNCTION archiver_erase_history(
    erasure bigint, subject text, conversation_ids text[], batch_size integer
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    e erasures%ROWTYPE;
    gone bigint;
BEGIN
    SELECT * INTO e FROM erasures WHERE id = erasure AND status <> 'completed';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'archiver_erase_history: no erasure % in progress', erasure
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH victims AS (
        SELECT h.id, h."timestamp" FROM conversation_history h
        WHERE h.tenant_id = e.tenant_id AND h."timestamp" <= e.requested_at
          AND ((e.kind = 'customer' AND h.customer_id = subject)
               OR (e.kind = 'user' AND h.user_id = subject))
        LIMIT batch_size
    ), deleted AS (
        DELETE FROM conversation_history h USING victims v
        WHERE h.id = v.id AND h."timestamp" = v."timestamp"
        RETURNING 1
    )
    SELECT count(*) INTO gone FROM deleted;
    IF gone > 0 THEN
        RETURN gone;
    END IF;
    WITH victims AS (
        SELECT h.id, h."timestamp" FROM conversation_history h
        WHERE h.conversation_id = ANY(conversation_ids) AND h.tenant_id = e.tenant_id
          AND h."timestamp" <= e.requested_at
        LIMIT batch_size
    ), deleted AS (
        DELETE FROM conversation_history h USING victims v
        WHERE h.id = v.id AND h."timestamp" = v."timestamp"
        RETURNING 1
    )
    SELECT count(*) INTO gone FROM deleted;
    RETURN gone;
END;
$$;

-- Dead letters (by id) found to hold the subject (decoded, or matched by the subject's bytes).
CREATE FUNCTION archiver_erase_dead_letters(erasure bigint, ids bigint[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    gone bigint;
BEGIN
    PERFORM 1 FROM erasures WHERE id = erasure AND status <> 'completed';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'archiver_erase_dead_letters: no erasure % in progress', erasure
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH deleted AS (DELETE FROM archive_dead_letters WHERE id = ANY(ids) RETURNING 1)
    SELECT count(*) INTO gone FROM deleted;
    RETURN gone;
END;
$$;

DO $$
DECLARE
    signature text;
BEGIN
    FOREACH signature IN ARRAY ARRAY[
        'archiver_erase_history(bigint, text, text[], integer)',
        'archiver_erase_dead_letters(bigint, bigint[])'
    ] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       signature, current_schema());
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', signature);
    END LOOP;
END;
$$;
GRANT EXECUTE ON FUNCTION archiver_erase_history(bigint, text, text[], integer),
    archiver_erase_dead_letters(bigint, bigint[]) TO archiver_writer;

-- The writer requests, runs and resumes erasures and reads the fences on every batch; the
-- reader (the history API) may show the audit trail, which names no one.
GRANT SELECT, INSERT, UPDATE ON erasures, erasure_fences TO archiver_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON erasure_work TO archiver_writer;
GRANT SELECT ON erasures TO archiver_reader;
