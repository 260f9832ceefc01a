# One service account per component, each granted only what its component does, on the
# narrowest resource that grants it (topic, secret, dataset, bucket) rather than the project.
# No primitive role (owner/editor/viewer) anywhere, and no component runs as the default
# Compute Engine service account.

resource "google_service_account" "gateway" {
  account_id   = "${local.name}-gateway"
  display_name = "clickstream gateway (Cloud Run): publishes events"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "processor" {
  account_id   = "${local.name}-processor"
  display_name = "clickstream processor (Cloud Functions): writes BigQuery and Cloud SQL"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "processor_build" {
  account_id   = "${local.name}-processor-build"
  display_name = "clickstream processor build (Cloud Build for the function)"
  depends_on   = [google_project_service.apis]
}

# `gcloud builds submit --service-account=...` (README step 2): new organisation projects no
# longer give Cloud Build's default account the roles a build needs.
resource "google_service_account" "image_builder" {
  account_id   = "${local.name}-image-builder"
  display_name = "clickstream image builder (Cloud Build for the gateway image)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "pubsub_push" {
  account_id   = "${local.name}-pubsub-push"
  display_name = "clickstream Pub/Sub push identity: invokes the processor"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "dashboard" {
  account_id   = "${local.name}-dashboard"
  display_name = "clickstream dashboard VM: reads Cloud SQL"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "rollups" {
  account_id   = "${local.name}-rollups"
  display_name = "clickstream BigQuery scheduled query: refreshes customer_daily"
  depends_on   = [google_project_service.apis]
}

locals {
  # Through the identity resource (apis.tf), so every grant to the agent waits until it exists.
  pubsub_service_agent = "serviceAccount:${google_project_service_identity.pubsub.email}"

  # Project-level roles that exist only at project level: writing logs, metrics and traces.
  telemetry_roles = {
    for pair in setproduct(
      ["gateway", "processor", "dashboard"],
      ["roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/cloudtrace.agent"],
    ) : "${pair[0]} ${pair[1]}" => { account = pair[0], role = pair[1] }
  }
  service_account_emails = {
    gateway   = google_service_account.gateway.email
    processor = google_service_account.processor.email
    dashboard = google_service_account.dashboard.email
  }
}

resource "google_project_iam_member" "telemetry" {
  for_each = local.telemetry_roles

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${local.service_account_emails[each.value.account]}"
}

# Gateway: publish to the two topics it writes, read the write keys.
resource "google_pubsub_topic_iam_member" "gateway_publishes" {
  for_each = {
    events     = google_pubsub_topic.events.name
    bad_events = google_pubsub_topic.bad_events.name
  }

  topic  = each.value
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.gateway.email}"
}

# The two builds (the function's, the gateway image's): Cloud Build runs as these accounts
# instead of a default one. Each writes logs (a project-level role) and pushes to its own
# repository only.
locals {
  builders = {
    processor_build = { email = google_service_account.processor_build.email, repository = google_artifact_registry_repository.images["processor"].name }
    image_builder   = { email = google_service_account.image_builder.email, repository = google_artifact_registry_repository.images["gateway"].name }
  }
}

resource "google_project_iam_member" "builders_write_logs" {
  for_each = local.builders

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${each.value.email}"
}

resource "google_artifact_registry_repository_iam_member" "builders_push" {
  for_each = local.builders

  location   = var.region
  repository = each.value.repository
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${each.value.email}"
}

# `gcloud builds submit --gcs-source-staging-dir` uploads the build context here.
resource "google_storage_bucket_iam_member" "image_builder_reads_builds" {
  bucket = google_storage_bucket.builds.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.image_builder.email}"
}

resource "google_storage_bucket_iam_member" "processor_build_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.processor_build.email}"
}

# Pub/Sub push: the push identity may invoke only the processor; Pub/Sub's agent mints its
# OIDC tokens.
resource "google_cloud_run_v2_service_iam_member" "push_invokes_processor" {
  name     = google_cloudfunctions2_function.processor.service_config[0].service
  location = var.region
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pubsub_push.email}"
}

resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  service_account_id = google_service_account.pubsub_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# Dashboard VM: fetch the source archives it installs (the dashboard and the operations tools).
resource "google_storage_bucket_iam_member" "dashboard_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.dashboard.email}"
}

# customer_daily's scheduled query (bigquery.tf) runs as the rollups account: it runs query jobs
# (a project-level role), reads the raw dataset (its access list) and writes customer_daily.
# BigQuery Data Transfer's service agent mints the account's tokens to start each run.
resource "google_project_iam_member" "rollups_run_queries" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.rollups.email}"
}

resource "google_bigquery_table_iam_member" "rollups_write_customer_daily" {
  dataset_id = google_bigquery_table.customer_daily.dataset_id
  table_id   = google_bigquery_table.customer_daily.table_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.rollups.email}"
}

resource "google_service_account_iam_member" "transfer_agent_mints_rollups_tokens" {
  service_account_id = google_service_account.rollups.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_project_service_identity.bigquery_data_transfer.email}"
}
