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

locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

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

# Function build: Cloud Build runs as this account instead of the default compute account.
resource "google_project_iam_member" "processor_build" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.processor_build.email}"
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
