locals {
  apis = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    # Scheduled queries (customer_daily's refresh).
    "bigquerydatatransfer.googleapis.com",
    "bigquerystorage.googleapis.com",
    "billingbudgets.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    # data.google_project, project IAM members and the audit config call it.
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "iap.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "apis" {
  for_each = local.apis

  service = each.value
  # Turning an API off on destroy would break anything else in the project that uses it.
  disable_on_destroy = false
}

# The project number names Google's service agents (Pub/Sub, Cloud Run, ...).
data "google_project" "this" {
  project_id = var.project_id
  depends_on = [google_project_service.apis]
}

# Pub/Sub's service agent is created lazily, after the API is enabled; granting it roles before
# it exists fails. This creates it (and waits for it) so the grants in iam.tf and pubsub.tf can
# depend on it.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  service    = "pubsub.googleapis.com"
  depends_on = [google_project_service.apis]
}

# Same for BigQuery Data Transfer's service agent, which starts the scheduled query as the
# rollups service account (iam.tf).
resource "google_project_service_identity" "bigquery_data_transfer" {
  provider = google-beta

  service    = "bigquerydatatransfer.googleapis.com"
  depends_on = [google_project_service.apis]
}
