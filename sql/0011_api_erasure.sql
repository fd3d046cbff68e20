-- The History API requests erasures of its tenant's subjects and reads their status (issue 16,
-- after the erasure's 0006). The API's role writes the tombstone as `archiver erase` does
-- (consumer/erasure: the erasures row, the fences, the working state), under row-level
-- security: only rows of the tenant its transaction names; the erasure itself is carried out
-- by the archiver's `erasure` job. The writer and reader roles keep seeing every row.

ALTER TABLE erasures ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasure_fences ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasure_work ENABLE ROW LEVEL SECURITY;

CREATE POLICY api_tenant ON erasures FOR ALL TO archiver_api
    USING (tenant_id = current_setting('archiver.tenant', true))
    WITH CHECK (tenant_id = current_setting('archiver.tenant', true));
CREATE POLICY api_tenant ON erasure_fences FOR ALL TO archiver_api
    USING (tenant_id = current_setting('archiver.tenant', true))
    WITH CHECK (tenant_id = current_setting('archiver.tenant', true));
CREATE POLICY api_tenant ON erasure_work FOR ALL TO archiver_api
    USING (EXISTS (SELECT 1 FROM erasures e WHERE e.id = erasure_id
                   AND e.tenant_id = current_setting('archiver.tenant', true)))
    WITH CHECK (EXISTS (SELECT 1 FROM erasures e WHERE e.id = erasure_id
                        AND e.tenant_id = current_setting('archiver.tenant', true)));

CREATE POLICY archiver_all ON erasures TO archiver_writer, archiver_reader
    USING (true) WITH CHECK (true);
CREATE POLICY archiver_all ON erasure_fences TO archiver_writer, archiver_reader
    USING (true) WITH CHECK (true);
CREATE POLICY archiver_all ON erasure_work TO archiver_writer, archiver_reader
    USING (true) WITH CHECK (true);

GRANT SELECT, INSERT ON erasures, erasure_fences, erasure_work TO archiver_api;
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO archiver_api',
                   pg_get_serial_sequence('erasures', 'id'));
END;
$$;
