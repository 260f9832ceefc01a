# Optional front door (var.gateway_domain): an external Application Load Balancer with a
# Google-managed certificate, a serverless NEG to the gateway and Cloud Armor limiting each
# client address. With it the gateway accepts traffic only from the load balancer (and the
# VPC): its own run.app URL stops answering the internet, so Cloud Armor cannot be bypassed.

locals {
  load_balanced = var.gateway_domain != null
  # Terraform's count: one of each resource below when the load balancer is on.
  load_balancer = local.load_balanced ? 1 : 0
}

resource "google_compute_region_network_endpoint_group" "gateway" {
  count = local.load_balancer

  name                  = "${local.name}-gateway"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = google_cloud_run_v2_service.gateway.name
  }
}

resource "google_compute_security_policy" "gateway" {
  count = local.load_balancer

  name        = "${local.name}-gateway"
  description = "clickstream gateway: requests per client address and minute, beyond which 429"

  rule {
    description = "at most gateway_rate_limit_per_minute requests a minute from one address"
    action      = "throttle"
    priority    = 1000
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.gateway_rate_limit_per_minute
        interval_sec = 60
      }
    }
  }

  # Log4Shell probes (checkov CKV_GCP_73): the gateway is Python, but the rule costs nothing.
  rule {
    description = "CVE-2021-44228 (Log4j) probes"
    action      = "deny(403)"
    priority    = 900
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('cve-canary')"
      }
    }
  }

  rule {
    description = "everything else"
    action      = "allow"
    priority    = 2147483647
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}

resource "google_compute_backend_service" "gateway" {
  count = local.load_balancer

  name                  = "${local.name}-gateway"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  security_policy       = google_compute_security_policy.gateway[0].id

  backend {
    group = google_compute_region_network_endpoint_group.gateway[0].id
  }

  log_config {
    enable      = true
    sample_rate = 0.1
  }
}

resource "google_compute_url_map" "gateway" {
  count = local.load_balancer

  name            = "${local.name}-gateway"
  default_service = google_compute_backend_service.gateway[0].id
}

resource "google_compute_managed_ssl_certificate" "gateway" {
  count = local.load_balancer

  name = "${local.name}-gateway"
  managed {
    domains = [var.gateway_domain]
  }
}

resource "google_compute_ssl_policy" "gateway" {
  count = local.load_balancer

  name            = "${local.name}-gateway"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "gateway" {
  count = local.load_balancer

  name             = "${local.name}-gateway"
  url_map          = google_compute_url_map.gateway[0].id
  ssl_certificates = [google_compute_managed_ssl_certificate.gateway[0].id]
  ssl_policy       = google_compute_ssl_policy.gateway[0].id
}

resource "google_compute_global_address" "gateway" {
  count = local.load_balancer

  name = "${local.name}-gateway"
}

resource "google_compute_global_forwarding_rule" "gateway" {
  count = local.load_balancer

  name                  = "${local.name}-gateway"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  target                = google_compute_target_https_proxy.gateway[0].id
  ip_address            = google_compute_global_address.gateway[0].id
  port_range            = "443"
}
