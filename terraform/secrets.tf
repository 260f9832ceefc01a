# Secret values live in Secret Manager; components read them at start (Cloud Run and Functions
# as secret environment variables, the VM through the API). Terraform state still holds the
# values it wrote: keep state in a private, versioned bucket (see README).

resource "random_password" "db" {
  length  = 32
  special = false
}

resource "random_password" "write_key" {
  length  = 40
  special = false
}

locals {
  db_password = coalesce(var.db_password, random_password.db.result)
  write_keys  = coalesce(var.write_keys, "${random_password.write_key.result}=web")

  secrets = {
    db_password             = "${local.name}-db-password"
    write_keys              = "${local.name}-write-keys"
    dashboard_password_hash = "${local.name}-dashboard-password-hash"
  }
}

resource "google_secret_manager_secret" "db_password" {
  secret_id = local.secrets.db_password
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "db_password" {
  secret      = google_secret_manager_secret.db_password.id
  secret_data = local.db_password
}

resource "google_secret_manager_secret" "write_keys" {
  secret_id = local.secrets.write_keys
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "write_keys" {
  secret      = google_secret_manager_secret.write_keys.id
  secret_data = local.write_keys
}

resource "google_secret_manager_secret" "dashboard_password_hash" {
  secret_id = local.secrets.dashboard_password_hash
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "dashboard_password_hash" {
  secret      = google_secret_manager_secret.dashboard_password_hash.id
  secret_data = var.dashboard_password_hash
}

# Each secret is readable by exactly the components that use it.
locals {
  secret_readers = {
    "gateway write_keys"                = { secret = google_secret_manager_secret.write_keys.id, account = google_service_account.gateway.email }
    "processor db_password"             = { secret = google_secret_manager_secret.db_password.id, account = google_service_account.processor.email }
    "dashboard db_password"             = { secret = google_secret_manager_secret.db_password.id, account = google_service_account.dashboard.email }
    "dashboard dashboard_password_hash" = { secret = google_secret_manager_secret.dashboard_password_hash.id, account = google_service_account.dashboard.email }
  }
}

resource "google_secret_manager_secret_iam_member" "readers" {
  for_each = local.secret_readers

  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value.account}"
}
