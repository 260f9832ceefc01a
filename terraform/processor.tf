# The processor: Cloud Functions gen2 (a Cloud Run service underneath), invoked by the Pub/Sub
# push subscriptions in pubsub.tf. It reaches Cloud SQL's private IP by Direct VPC egress from
# the private subnet, and BigQuery through Private Google Access.

locals {
  processor_timeout_seconds = 300
}

resource "google_cloudfunctions2_function" "processor" {
  name        = "${local.name}-processor"
  location    = var.region
  description = "clickstream processor: enriches events into BigQuery and Cloud SQL"

  build_config {
    runtime         = "python311"
    entry_point     = "process_pubsub"
    service_account = google_service_account.processor_build.id
    # Its own repository, where only this build may push (iam.tf).
    docker_repository = google_artifact_registry_repository.images["processor"].id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.processor.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.processor.email
    available_memory                 = var.processor_memory
    available_cpu                    = "1"
    max_instance_count               = var.processor_max_instances
    min_instance_count               = 0
    max_instance_request_concurrency = var.processor_concurrency
    timeout_seconds                  = local.processor_timeout_seconds
    # Only Pub/Sub push (same project) may call it.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true

    direct_vpc_egress = "VPC_EGRESS_PRIVATE_RANGES_ONLY"
    direct_vpc_network_interface {
      network    = google_compute_network.main.id
      subnetwork = google_compute_subnetwork.private.id
      tags       = [local.processor_tag]
    }

    environment_variables = {
      GOOGLE_CLOUD_PROJECT         = var.project_id
      CLICKSTREAM_BIGQUERY_DATASET = google_bigquery_dataset.main.dataset_id
      DATABASE_URL                 = local.processor_database_url
      CLICKSTREAM_DB_SERVER_CA     = local.sql_server_ca
      # The processor converts every order into it (processor/currency.py).
      CLICKSTREAM_REPORTING_CURRENCY = var.reporting_currency
      # Dedup keys and timeline rows older than this are pruned (processor/db.py).
      CLICKSTREAM_RETENTION = "${var.retention_days}d"
    }

    secret_environment_variables {
      key        = "CLICKSTREAM_DB_PASSWORD"
      project_id = var.project_id
      secret     = google_secret_manager_secret.secrets["processor_db_password"].secret_id
      version    = "latest"
    }
  }

  depends_on = [
    google_project_iam_member.builders_write_logs,
    google_artifact_registry_repository_iam_member.builders_push,
    google_storage_bucket_iam_member.processor_build_reads_source,
    google_secret_manager_secret_iam_member.readers,
    google_secret_manager_secret_version.processor_db_password,
    google_sql_user.processor,
    google_bigquery_dataset_access.processor_writer,
  ]
}
