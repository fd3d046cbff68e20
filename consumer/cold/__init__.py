"""The cold tier: months of conversation_history as Parquet or JSON lines files on a local
volume or S3.

* storage: the URL (ARCHIVER_COLD_URL, file:// or s3://) as a pyarrow filesystem;
* layout: where files go, Hive-style (`conversation_history/tenant_id=T/month=YYYY-MM/`);
* formats, columns, jsonl, files: the files' formats (Parquet; JSON lines, zstd or gzip), their
  columns, the JSON lines encoding, and reading and writing a part file in its format;
* digest: the content digest over message identities (the same as PostgreSQL's);
* records: the archived_partitions rows (one per exported version of a tenant's month);
* export: PostgreSQL -> files, streamed, idempotent, crash-safe;
* verify: read every file back from storage and check it against its record;
* restore: the rows back into conversation_history, idempotently;
* query: DuckDB over the files in place;
* gate: retention's `--then export` (retention.ExportGate) and the monthly `cold` job.
"""
