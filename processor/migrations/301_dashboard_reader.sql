-- The dashboard reads with a role of its own that may read every table and write none
-- (terraform/sql.tf creates it as a login user, with its own password; elsewhere it is created
-- here without login). The processor's role, which runs the migrations, owns the tables.
-- Roles are per server, not per database: another database's migration may have created it.
DO $$
BEGIN
    CREATE ROLE clickstream_dashboard NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO clickstream_dashboard;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO clickstream_dashboard;
-- Tables later migrations create (as the same role) are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO clickstream_dashboard;
