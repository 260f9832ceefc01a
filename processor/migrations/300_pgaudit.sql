-- pgAudit on Cloud SQL (terraform/sql.tf sets cloudsql.enable_pgaudit and pgaudit.log): the
-- extension must exist in the database for its settings to log anything. Servers without the
-- extension (a local PostgreSQL, the tests') have nothing to audit with: skipped there.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgaudit') THEN
        CREATE EXTENSION IF NOT EXISTS pgaudit;
    END IF;
END
$$;
