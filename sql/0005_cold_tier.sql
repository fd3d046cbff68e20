-- The cold tier: months of conversation_history exported as files (Parquet, zstd) on a local
-- volume or S3, one row per exported version of a tenant's month.
--
-- An export writes its files first (under a staging name, moved to the final name once
-- complete), then its manifest, and this row last, in the transaction whose snapshot it read:
-- a row here names files that exist and are complete. A month exported again because its
-- rows changed gets a new version; the previous one stops being current in the same
-- transaction. `content_digest` is computed in PostgreSQL over the rows' identities
-- (conversation, message key, time) in the export's snapshot; verify recomputes it from the
-- files read back from storage and sets `verified_at` (or `verify_error`).

CREATE TABLE archived_partitions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name      text        NOT NULL DEFAULT 'conversation_history',
    tenant_id       text        NOT NULL,
    month           date        NOT NULL CHECK (extract(day FROM month) = 1),
    version         integer     NOT NULL CHECK (version >= 1),
    is_current      boolean     NOT NULL DEFAULT true,
    export_id       text        NOT NULL UNIQUE,
    archive_path    text        NOT NULL,  -- the month's directory (URL)
    manifest_path   text        NOT NULL,
    format          text        NOT NULL CHECK (format IN ('parquet')),
    files           integer     NOT NULL CHECK (files >= 1),
    row_count       bigint      NOT NULL CHECK (row_count >= 0),
    compressed_size bigint      NOT NULL CHECK (compressed_size >= 0),
    sha256          text        NOT NULL,  -- of the file; of the files' digests when several
    content_digest  text        NOT NULL,
    min_timestamp   timestamptz,
    max_timestamp   timestamptz,
    exported_at     timestamptz NOT NULL DEFAULT now(),
    verified_at     timestamptz,
    verify_error    text,
    UNIQUE (table_name, tenant_id, month, version)
);
-- At most one current version per tenant's month.
CREATE UNIQUE INDEX archived_partitions_current
    ON archived_partitions (table_name, tenant_id, month) WHERE is_current;

-- The writer exports, verifies and restores (the archiver's own role); readers may list.
GRANT SELECT, INSERT, UPDATE ON archived_partitions TO archiver_writer;
GRANT SELECT ON archived_partitions TO archiver_reader;
