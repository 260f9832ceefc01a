# The ingestion gateway: the platform's only public entry point (Cloud Run's HTTPS front end).

resource "google_cloud_run_v2_service" "gateway" {
  name     = "${local.name}-gateway"
  location = var.region
  # Behind the load balancer (loadbalancer.tf) only it may reach the gateway.
  ingress             = local.load_balanced ? "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" : "INGRESS_TRAFFIC_ALL"
  deletion_protection = false
  # Browsers and SDKs call the gateway without Google credentials; write keys authenticate
  # them. Turning the invoker check off, rather than granting run.invoker to everyone, is what
  # the domain-restricted-sharing policy of organisation projects allows.
  invoker_iam_disabled = true

  template {
    service_account                  = google_service_account.gateway.email
    max_instance_request_concurrency = var.gateway_concurrency
    timeout                          = "60s"

    scaling {
      min_instance_count = var.gateway_min_instances
      max_instance_count = var.gateway_max_instances
    }

    # Pins the gateway to the public subnet; firewall.tf denies it every private destination.
    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = google_compute_network.main.id
        subnetwork = google_compute_subnetwork.public.id
        tags       = [local.gateway_tag]
      }
    }

    containers {
      image = var.gateway_image
      # One Granian worker process per vCPU (see images/gateway.Dockerfile).
      args = ["--workers", var.gateway_cpu]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.gateway_cpu
          memory = var.gateway_memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        name  = "CLICKSTREAM_EVENTS_TOPIC"
        value = google_pubsub_topic.events.name
      }
      env {
        name  = "CLICKSTREAM_BAD_EVENTS_TOPIC"
        value = google_pubsub_topic.bad_events.name
      }
      env {
        name  = "CLICKSTREAM_CORS_ORIGINS"
        value = join(",", var.gateway_cors_origins)
      }
      env {
        name = "CLICKSTREAM_WRITE_KEYS"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.secrets["write_keys"].secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        http_get {
          path = "/health"
        }
        period_seconds    = 2
        failure_threshold = 15
      }

      liveness_probe {
        http_get {
          path = "/health"
        }
        period_seconds = 15
      }
    }
  }

  # The first revision reads the write keys at `latest`: a version must exist by then.
  depends_on = [
    google_secret_manager_secret_iam_member.readers,
    google_secret_manager_secret_version.write_keys,
    google_pubsub_topic_iam_member.gateway_publishes,
  ]
}
