# Cloud SQL for PostgreSQL: private IP only (private services access), TLS required,
# automated backups with point-in-time recovery, protected from deletion.

resource "random_id" "sql_suffix" {
  # Cloud SQL reserves a deleted instance's name for a week: a suffix allows recreation.
  byte_length = 3
}

resource "google_sql_database_instance" "main" {
  #checkov:skip=CKV_GCP_6:TLS is required (ssl_mode ENCRYPTED_ONLY); client certificates would mean long-lived client keys in every component, and only the processor and dashboard can reach the private IP (firewall.tf)
  #checkov:skip=CKV2_GCP_13:log_duration logs a line per statement (tens of thousands a second at load); Query Insights records statement latency instead
  name                = "${local.name}-pg-${random_id.sql_suffix.hex}"
  database_version    = var.db_version
  region              = var.region
  deletion_protection = var.deletion_protection

  settings {
    tier = var.db_tier
    # The performance-optimized tiers exist only in Enterprise Plus.
    edition                     = startswith(var.db_tier, "db-perf-optimized-") ? "ENTERPRISE_PLUS" : "ENTERPRISE"
    availability_type           = var.db_availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection

    ip_configuration {
      ipv4_enabled                                  = false
      private_network                               = google_compute_network.main.id
      allocated_ip_range                            = google_compute_global_address.private_services.name
      ssl_mode                                      = "ENCRYPTED_ONLY"
      enable_private_path_for_google_cloud_services = true
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "03:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = 14
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7 # Sunday
      hour         = 4
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      query_string_length     = 1024
      record_application_tags = true
      record_client_address   = true
    }

    # Connection, lock and DDL logging for audits and incident work. Statement text is not
    # logged (it would carry customer data), only errors; Query Insights keeps latencies.
    # pgAudit (the extension is created by migration 300_pgaudit) records schema changes and
    # role and privilege changes: who changed what the data is kept in, and who may read it.
    # Reads and writes are left out, as their statements carry customer data.
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "ddl,role"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "max_connections"
      value = "200"
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

# ABANDON on destroy: the database and the user are gone with the instance anyway, and
# deleting them first fails (the user owns the migrated tables; the database has connections).
resource "google_sql_database" "main" {
  name            = var.db_name
  instance        = google_sql_database_instance.main.name
  deletion_policy = "ABANDON"
}

# The schema owner: only migrations connect as it (the VM's `clickstream db migrate`). The
# password is write-only (secrets.tf): sent when password_wo_version changes, never stored.
resource "google_sql_user" "app" {
  name                = var.db_user
  instance            = google_sql_database_instance.main.name
  password_wo         = local.db_password
  password_wo_version = var.secret_versions.db_password
  deletion_policy     = "ABANDON"
}

# The processor's own user: rows only (no schema changes), through membership in the
# clickstream_processor role that migration 302_processor_writer creates and grants it. The
# migration grants it, not Terraform: granting from here would need a PostgreSQL provider
# reaching the private IP from wherever Terraform runs, while the migration already runs inside
# the network as the schema owner (the VM's clickstream-migrate.service, after this user exists).
resource "google_sql_user" "processor" {
  name                = local.processor_db_user
  instance            = google_sql_database_instance.main.name
  password_wo         = ephemeral.random_password.processor_db.result
  password_wo_version = var.secret_versions.processor_db_password
  deletion_policy     = "ABANDON"
}

# The dashboard's own user: read access only, granted by migration 301_dashboard_reader. Cloud
# SQL makes every user it creates a member of cloudsqlsuperuser, which gives no access to tables
# another role owns.
resource "google_sql_user" "dashboard" {
  name                = local.dashboard_db_user
  instance            = google_sql_database_instance.main.name
  password_wo         = ephemeral.random_password.dashboard_db.result
  password_wo_version = var.secret_versions.dashboard_db_password
  deletion_policy     = "ABANDON"
}
