# The dashboard: one Shielded VM in the private subnet, no external IP, reached only through IAP
# TCP forwarding (see README). A startup script installs the dashboard's archive (the dashboard
# and the contract) from the source bucket and runs `clickstream dashboard` as a systemd service;
# the operations archive beside it gives the operator `clickstream-admin` (migrations, prune,
# erase, audit) inside the VPC.

locals {
  dashboard_port = 8050
  admin_member   = "user:${var.admin_email}"
}

data "google_compute_image" "debian" {
  family  = "debian-12"
  project = "debian-cloud"
}

resource "google_compute_instance" "dashboard" {
  #checkov:skip=CKV_GCP_38:the boot disk holds only the installed package (no data: it reads Cloud SQL); Google-managed encryption at rest, no customer-supplied key to lose
  name         = "${local.name}-dashboard"
  machine_type = var.dashboard_machine_type
  zone         = var.zone
  description  = "clickstream dashboard (IAP only)"

  boot_disk {
    initialize_params {
      image = data.google_compute_image.debian.self_link
      size  = 20
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.private.id
    # No access_config block: the VM has no external IP; it reaches PyPI through Cloud NAT.
  }

  service_account {
    email = google_service_account.dashboard.email
    # Access is governed by the account's IAM roles; the scope only lets the VM use them.
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
    serial-port-enable     = "FALSE"
    # Startup scripts rerun at every boot: a changed archive is installed on the next reset.
    startup-script = templatefile("${path.module}/templates/dashboard-startup.sh.tftpl", {
      project_id                   = var.project_id
      dashboard_source_uri         = "gs://${google_storage_bucket.source.name}/${google_storage_bucket_object.dashboard.name}"
      operations_source_uri        = "gs://${google_storage_bucket.source.name}/${google_storage_bucket_object.operations.name}"
      database_url                 = local.database_url
      db_password_secret           = google_secret_manager_secret.secrets["db_password"].secret_id
      dashboard_database_url       = local.dashboard_database_url
      dashboard_db_password_secret = google_secret_manager_secret.secrets["dashboard_db_password"].secret_id
      server_ca                    = local.sql_server_ca
      password_hash_secret         = google_secret_manager_secret.secrets["dashboard_password_hash"].secret_id
      port                         = local.dashboard_port
      reporting_currency           = var.reporting_currency
    })
  }

  can_ip_forward            = false
  deletion_protection       = false
  allow_stopping_for_update = true

  lifecycle {
    precondition {
      condition     = startswith(var.zone, "${var.region}-")
      error_message = "zone must lie in region."
    }
  }

  depends_on = [
    google_compute_router_nat.main,
    google_secret_manager_secret_iam_member.readers,
    google_secret_manager_secret_version.db_password,
    google_secret_manager_secret_version.dashboard_db_password,
    google_secret_manager_secret_version.dashboard_password_hash,
    google_storage_bucket_iam_member.dashboard_reads_source,
    # Its migrations grant the dashboard's and the processor's users (existing roles) access.
    google_sql_user.dashboard,
    google_sql_user.processor,
  ]
}

# Who may open an IAP tunnel to the VM (the dashboard port; SSH additionally needs OS Login).
resource "google_iap_tunnel_instance_iam_member" "dashboard" {
  for_each = toset(concat([local.admin_member], var.dashboard_members))

  instance = google_compute_instance.dashboard.name
  zone     = var.zone
  role     = "roles/iap.tunnelResourceAccessor"
  member   = each.value
}

# The operator may SSH in with sudo (to run migrations) ...
resource "google_compute_instance_iam_member" "admin_os_login" {
  instance_name = google_compute_instance.dashboard.name
  zone          = var.zone
  role          = "roles/compute.osAdminLogin"
  member        = local.admin_member
}

# ... which OS Login allows on a VM with a service account only to its users.
resource "google_service_account_iam_member" "admin_uses_dashboard_account" {
  service_account_id = google_service_account.dashboard.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.admin_member
}
