# Deny by default in both directions for the tiers, then allow only what a flow needs:
#   IAP -> dashboard (SSH and the dashboard port), processor and dashboard -> PostgreSQL.
# The gateway's public entry is Cloud Run's HTTPS front end, not a firewall rule: no rule here
# admits 0.0.0.0/0.

resource "google_compute_firewall" "deny_all_ingress" {
  name      = "${local.name}-deny-all-ingress"
  network   = google_compute_network.main.id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "allow_iap_to_dashboard" {
  name        = "${local.name}-allow-iap-dashboard"
  description = "IAP TCP forwarding: SSH (OS Login) and the dashboard port, from IAP's range only."
  network     = google_compute_network.main.id
  direction   = "INGRESS"
  priority    = 1000

  allow {
    protocol = "tcp"
    ports    = ["22", tostring(local.dashboard_port)]
  }
  source_ranges           = [local.iap_range]
  target_service_accounts = [google_service_account.dashboard.email]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Only the processor and the dashboard talk to PostgreSQL.
resource "google_compute_firewall" "allow_postgres_from_processor" {
  name               = "${local.name}-allow-pg-processor"
  network            = google_compute_network.main.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = [var.private_services_cidr, local.subnets.data.cidr]
  target_tags        = [local.processor_tag]

  allow {
    protocol = "tcp"
    ports    = ["5432"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "allow_postgres_from_dashboard" {
  name                    = "${local.name}-allow-pg-dashboard"
  network                 = google_compute_network.main.id
  direction               = "EGRESS"
  priority                = 1000
  destination_ranges      = [var.private_services_cidr, local.subnets.data.cidr]
  target_service_accounts = [google_service_account.dashboard.email]

  allow {
    protocol = "tcp"
    ports    = ["5432"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Everything else in the VPC (the gateway above all: it faces the internet) is denied any
# traffic into the data tier.
resource "google_compute_firewall" "deny_data_tier_egress" {
  name               = "${local.name}-deny-data-tier"
  network            = google_compute_network.main.id
  direction          = "EGRESS"
  priority           = 2000
  destination_ranges = [var.private_services_cidr, local.subnets.data.cidr]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# The gateway needs nothing inside the VPC; its Direct VPC egress exists to pin it to the
# public subnet, so deny it every private destination.
resource "google_compute_firewall" "deny_gateway_internal_egress" {
  name               = "${local.name}-deny-gateway-internal"
  network            = google_compute_network.main.id
  direction          = "EGRESS"
  priority           = 1500
  destination_ranges = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
  target_tags        = [local.gateway_tag]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
