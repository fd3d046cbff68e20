-- The History API says which of its tenant's months have moved to the cold tier (issue 16;
-- applied after the cold tier's 0005, which creates archived_partitions). The API's role reads
-- that table as it reads the archive: only the rows of the tenant its transaction names.
-- The writer and reader roles keep seeing every row; the owner is not affected.

ALTER TABLE archived_partitions ENABLE ROW LEVEL SECURITY;

CREATE POLICY api_tenant ON archived_partitions FOR SELECT TO archiver_api
    USING (tenant_id = current_setting('archiver.tenant', true));
CREATE POLICY archiver_all ON archived_partitions TO archiver_writer, archiver_reader
    USING (true) WITH CHECK (true);

GRANT SELECT ON archived_partitions TO archiver_api;
