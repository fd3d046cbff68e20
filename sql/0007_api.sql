-- The History API (issue 16): its keys, its role, and row-level security per tenant.
--
-- A third kind of role beside the migration owner and archiver_writer (0003):
--   * archiver_api (NOLOGIN group): what `archiver api` needs. It owns nothing, may read
--     conversation_history and conversations only through the policies below (one tenant's rows,
--     the tenant named by the per-transaction setting `archiver.tenant`), and checks keys through
--     one function. An operator grants it to the API's own login role, and to nothing else:
--     a login role that also holds archiver_writer or archiver_reader sees every tenant.
--
-- Enabling row-level security changes every role but the tables' owner (and superusers): a
-- role without a policy sees no rows. archiver_writer and archiver_reader keep seeing every row
-- through their own permissive policies; the owner's functions (retention, partitions) are
-- not affected.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'archiver_api') THEN
        BEGIN
            CREATE ROLE archiver_api NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'role archiver_api does not exist and % may not create roles', current_user
                USING HINT = 'as an administrator: CREATE ROLE archiver_api NOLOGIN; then run archiver migrate again';
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO archiver_api', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO archiver_api', current_schema());
END;
$$;

-- API keys. A key is a random secret of 256 bits shown once when created; only its SHA-256 is
-- stored (a fast hash is enough for a high-entropy secret: there is nothing to guess).
-- `prefix` (the key's first characters) tells keys apart in listings. A key belongs to one
-- tenant and carries scopes ('read', 'erase'). Expiry is by PostgreSQL's clock.
CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text        NOT NULL CHECK (tenant_id <> ''),
    name        text        NOT NULL CHECK (name <> ''),
    prefix      text        NOT NULL,
    key_hash    bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    scopes      text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'erase'] AND cardinality(scopes) > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

-- The API's only way to read api_keys: the tenant and scopes of a key that is neither revoked
-- nor expired, by the hash of the key presented; no row otherwise. It runs with its owner's
-- rights (the API role may not list keys) and a fixed search_path.
CREATE FUNCTION archiver_api_key(presented bytea)
RETURNS TABLE (key_id bigint, tenant_id text, scopes text[])
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT k.id, k.tenant_id, k.scopes FROM api_keys k
    WHERE k.key_hash = presented AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION archiver_api_key(bytea) SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
END;
$$;
REVOKE ALL ON FUNCTION archiver_api_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION archiver_api_key(bytea) TO archiver_api;

-- Row-level security: the API role sees the rows of the tenant its transaction names, and
-- none when it names none (current_setting(..., true) is then NULL or '', equal to no tenant).
ALTER TABLE conversation_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;

CREATE POLICY api_tenant ON conversation_history FOR SELECT TO archiver_api
    USING (tenant_id = current_setting('archiver.tenant', true));
CREATE POLICY api_tenant ON conversations FOR SELECT TO archiver_api
    USING (tenant_id = current_setting('archiver.tenant', true));

CREATE POLICY archiver_all ON conversation_history TO archiver_writer, archiver_reader
    USING (true) WITH CHECK (true);
CREATE POLICY archiver_all ON conversations TO archiver_writer, archiver_reader
    USING (true) WITH CHECK (true);

GRANT SELECT ON schema_migrations, conversation_history, conversations TO archiver_api;

-- Conversations newest first (by start: a conversation that gets new messages while a client
-- pages does not move), of a tenant, a customer or a user.
CREATE INDEX conversations_api_started
    ON conversations (tenant_id, started_at DESC, conversation_id DESC);
CREATE INDEX conversations_api_customer
    ON conversations (tenant_id, customer_id, started_at DESC, conversation_id DESC);
CREATE INDEX conversations_api_user
    ON conversations (tenant_id, user_id, started_at DESC, conversation_id DESC);
