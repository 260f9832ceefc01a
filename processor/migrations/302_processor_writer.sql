-- The processor writes with a role that has only what its statements need: reads and writes of
-- rows, the sequences behind identity columns, temporary tables and the functions its
-- statements and triggers call. It owns nothing, so it cannot create, alter or drop a table;
-- the role that runs these migrations (`clickstream db migrate`) owns the schema.
-- A NOLOGIN group: logins get it by membership. terraform/sql.tf creates the processor's login
-- as clickstream_processor_login, granted here when it exists (the deployment creates it before
-- the VM first migrates). Roles are per server: another database's migration may have made it.
DO $$
BEGIN
    CREATE ROLE clickstream_processor NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clickstream_processor_login') THEN
        GRANT clickstream_processor TO clickstream_processor_login;
    END IF;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO clickstream_processor',
                   current_database());
END
$$;

-- Before PostgreSQL 15 every role may create tables in public; only the owner should.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO clickstream_processor;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO clickstream_processor;
-- The processor checks the schema's version at start; only migrations record one.
REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM clickstream_processor;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO clickstream_processor;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO clickstream_processor;
-- Objects later migrations create (as the same role) are covered too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO clickstream_processor;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO clickstream_processor;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO clickstream_processor;
