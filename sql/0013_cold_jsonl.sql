-- The cold tier's JSON lines format (issue 14): a version's files are Parquet (zstd) or JSON
-- lines (zstd or gzip). `compression` says which; every version written before is Parquet/zstd.
-- A month's versions may differ in format: each row says how its own files are written.

ALTER TABLE archived_partitions DROP CONSTRAINT archived_partitions_format_check;
ALTER TABLE archived_partitions ADD COLUMN compression text NOT NULL DEFAULT 'zstd';
ALTER TABLE archived_partitions ADD CONSTRAINT archived_partitions_format_check
    CHECK (format IN ('parquet', 'jsonl') AND compression IN ('zstd', 'gzip')
           AND (format = 'jsonl' OR compression = 'zstd'));
