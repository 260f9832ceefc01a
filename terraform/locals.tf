locals {
  name              = var.name_prefix
  bigquery_location = coalesce(var.bigquery_location, var.region)

  # The documented layout: each subnet's role and range. Tests read these three values.
  subnets = {
    public = {
      cidr = "10.0.1.0/24"
      role = "gateway side: Cloud Run gateway egress (Direct VPC)"
    }
    private = {
      cidr = "10.0.2.0/24"
      role = "processing: processor function egress (Direct VPC) and the dashboard VM"
    }
    data = {
      cidr = "10.0.3.0/24"
      role = "databases: data-tier hosts; Cloud SQL itself sits in the private services range"
    }
  }

  # Network tags carried by Direct VPC egress traffic; firewall rules select on them. The
  # dashboard VM is selected by its service account instead (tags are editable metadata).
  gateway_tag   = "${local.name}-gateway"
  processor_tag = "${local.name}-processor"

  # Ranges Google uses for IAP TCP forwarding.
  iap_range = "35.235.240.0/20"

  # Topic names are clickstream_contract.config.Settings' defaults after name_prefix; the
  # gateway gets its two by environment.
  topics = {
    events      = "${local.name}-events"
    bad_events  = "${local.name}-events-bad"
    dead_letter = "${local.name}-events-dead-letter"
  }

  # TLS with the server's certificate verified against the instance's CA, which reaches each
  # component as CLICKSTREAM_DB_SERVER_CA (a public certificate, not a secret). The password is
  # not in the URL: it reaches each component as CLICKSTREAM_DB_PASSWORD.
  sql_server_ca = google_sql_database_instance.main.server_ca_cert[0].cert
  database_url  = "postgresql://${var.db_user}@${google_sql_database_instance.main.private_ip_address}:5432/${var.db_name}?sslmode=verify-ca"
  # The dashboard reads as a user of its own, which migration 301_dashboard_reader grants
  # read access to every table and nothing else.
  dashboard_db_user      = "clickstream_dashboard"
  dashboard_database_url = "postgresql://${local.dashboard_db_user}@${google_sql_database_instance.main.private_ip_address}:5432/${var.db_name}?sslmode=verify-ca"
  # The processor writes as a user of its own, which migration 302_processor_writer makes a
  # member of the clickstream_processor role: rows only, no schema changes.
  processor_db_user      = "clickstream_processor_login"
  processor_database_url = "postgresql://${local.processor_db_user}@${google_sql_database_instance.main.private_ip_address}:5432/${var.db_name}?sslmode=verify-ca"
}
