-- For docker-compose.yml (mounted into /docker-entrypoint-initdb.d, run once when the volume is
-- new): the least-privilege roles of sql/0003_roles.sql, created ahead so that the login role
-- the archiver runs as can be made here. `archiver migrate` (as the owner, POSTGRES_USER) then
-- grants the group roles their privileges; `archiver run` logs in as archiver_app.
-- The password is for a laptop only.
CREATE ROLE archiver_writer NOLOGIN;
CREATE ROLE archiver_reader NOLOGIN;
CREATE ROLE archiver_app LOGIN PASSWORD 'archiver_app' IN ROLE archiver_writer;
