# Secret values live in Secret Manager only; components read them at start (Cloud Run and
# Functions as secret environment variables, the VM through the API). Terraform never keeps
# them: they are ephemeral (generated with ephemeral random_password, or given as ephemeral
# variables) and reach Google only through write-only arguments (secret_data_wo, password_wo),
# which are sent on create and when their *_version changes, and never written to state or plan.
# To rotate a secret, bump its number in var.secret_versions (README "Rotating secrets").

ephemeral "random_password" "db" {
  length  = 32
  special = false
}

ephemeral "random_password" "dashboard_db" {
  length  = 32
  special = false
}

ephemeral "random_password" "processor_db" {
  length  = 32
  special = false
}

ephemeral "random_password" "write_key" {
  length  = 40
  special = false
}

locals {
  db_password = coalesce(var.db_password, ephemeral.random_password.db.result)
  write_keys  = coalesce(var.write_keys, "${ephemeral.random_password.write_key.result}=web")

  secrets = {
    db_password             = "${local.name}-db-password"
    dashboard_db_password   = "${local.name}-dashboard-db-password"
    processor_db_password   = "${local.name}-processor-db-password"
    write_keys              = "${local.name}-write-keys"
    dashboard_password_hash = "${local.name}-dashboard-password-hash"
  }
}

resource "google_secret_manager_secret" "secrets" {
  for_each = local.secrets

  secret_id = each.value
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "db_password" {
  secret                 = google_secret_manager_secret.secrets["db_password"].id
  secret_data_wo         = local.db_password
  secret_data_wo_version = var.secret_versions.db_password
}

resource "google_secret_manager_secret_version" "dashboard_db_password" {
  secret                 = google_secret_manager_secret.secrets["dashboard_db_password"].id
  secret_data_wo         = ephemeral.random_password.dashboard_db.result
  secret_data_wo_version = var.secret_versions.dashboard_db_password
}

resource "google_secret_manager_secret_version" "processor_db_password" {
  secret                 = google_secret_manager_secret.secrets["processor_db_password"].id
  secret_data_wo         = ephemeral.random_password.processor_db.result
  secret_data_wo_version = var.secret_versions.processor_db_password
}

resource "google_secret_manager_secret_version" "write_keys" {
  secret                 = google_secret_manager_secret.secrets["write_keys"].id
  secret_data_wo         = local.write_keys
  secret_data_wo_version = var.secret_versions.write_keys
}

resource "google_secret_manager_secret_version" "dashboard_password_hash" {
  secret                 = google_secret_manager_secret.secrets["dashboard_password_hash"].id
  secret_data_wo         = var.dashboard_password_hash
  secret_data_wo_version = var.secret_versions.dashboard_password_hash
}

# Each secret is readable by exactly the components that use it.
locals {
  secret_readers = {
    "gateway write_keys"                = { secret = google_secret_manager_secret.secrets["write_keys"].id, account = google_service_account.gateway.email }
    "processor processor_db_password"   = { secret = google_secret_manager_secret.secrets["processor_db_password"].id, account = google_service_account.processor.email }
    "dashboard db_password"             = { secret = google_secret_manager_secret.secrets["db_password"].id, account = google_service_account.dashboard.email }
    "dashboard dashboard_db_password"   = { secret = google_secret_manager_secret.secrets["dashboard_db_password"].id, account = google_service_account.dashboard.email }
    "dashboard dashboard_password_hash" = { secret = google_secret_manager_secret.secrets["dashboard_password_hash"].id, account = google_service_account.dashboard.email }
  }
}

resource "google_secret_manager_secret_iam_member" "readers" {
  for_each = local.secret_readers

  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value.account}"
}
