-- The archive: messages partitioned by month, one row per conversation, runs and dead letters.

CREATE TABLE conversation_history (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id        text        NOT NULL,
    customer_id      text,
    user_id          text,
    conversation_id  text        NOT NULL,
    "timestamp"      timestamptz NOT NULL,
    message_role     text        NOT NULL
        CHECK (message_role IN ('user', 'assistant', 'system', 'tool')),
    message_content  text        NOT NULL,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    message_key      text        NOT NULL,
    source_key       text        NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, "timestamp")
) PARTITION BY RANGE ("timestamp");

COMMENT ON COLUMN conversation_history.message_key IS
    'Identity of the message within its conversation, stable across checkpoints.';

-- Idempotency: one row per (tenant, conversation, message identity). A unique index on a
-- partitioned table must include the partition key; the archiver also checks the identity
-- without the timestamp (under the conversation's row lock), since a message without its own
-- timestamp takes its checkpoint's, which differs between checkpoints.
CREATE UNIQUE INDEX conversation_history_identity
    ON conversation_history (tenant_id, conversation_id, message_key, "timestamp");
CREATE INDEX conversation_history_conversation_time
    ON conversation_history (conversation_id, "timestamp");
CREATE INDEX conversation_history_customer_time
    ON conversation_history (tenant_id, customer_id, "timestamp");
CREATE INDEX conversation_history_user_time
    ON conversation_history (tenant_id, user_id, "timestamp");

CREATE TABLE conversations (
    tenant_id         text        NOT NULL,
    conversation_id   text        NOT NULL,
    customer_id       text,
    user_id           text,
    started_at        timestamptz,
    ended_at          timestamptz,
    message_count     bigint      NOT NULL DEFAULT 0,
    last_archived_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX conversations_customer ON conversations (tenant_id, customer_id, ended_at DESC);
CREATE INDEX conversations_user ON conversations (tenant_id, user_id, ended_at DESC);
CREATE INDEX conversations_recent ON conversations (ended_at DESC, tenant_id, conversation_id);

CREATE TABLE archive_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind IN ('sweep', 'consumer')),
    host          text        NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL,
    status        text        NOT NULL CHECK (status IN ('ok', 'errors', 'failed')),
    found         bigint      NOT NULL DEFAULT 0,
    archived      bigint      NOT NULL DEFAULT 0,
    messages      bigint      NOT NULL DEFAULT 0,
    dead_letters  bigint      NOT NULL DEFAULT 0,
    errors        bigint      NOT NULL DEFAULT 0,
    details       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX archive_runs_recent ON archive_runs (started_at DESC);

CREATE TABLE archive_dead_letters (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_key    text        NOT NULL,
    digest        text        NOT NULL,
    raw           bytea       NOT NULL,
    error         text        NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    attempts      integer     NOT NULL DEFAULT 1,
    resolved_at   timestamptz,
    UNIQUE (source_key, digest)
);
CREATE INDEX archive_dead_letters_open ON archive_dead_letters (first_seen_at) WHERE resolved_at IS NULL;

-- Monthly partitions, created on demand; concurrent callers serialise on an advisory lock.
CREATE FUNCTION archiver_ensure_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := format('conversation_history_%s', to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('archiver_ensure_partition'));
    BEGIN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF conversation_history FOR VALUES FROM (%L) TO (%L)',
            name, month_start, month_start + interval '1 month');
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        NULL;  -- another archiver created it first
    END;
    RETURN name;
END;
$$;
