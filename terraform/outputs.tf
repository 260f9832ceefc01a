# What an operator needs after apply. No output carries a secret: secrets are named by their
# Secret Manager id, and their values are read with gcloud (see README).

output "gateway_url" {
  description = "HTTPS URL clients send events to (POST /v1/events, /v1/batch): the load balancer's domain with gateway_domain, else Cloud Run's URL."
  value       = local.load_balanced ? "https://${var.gateway_domain}" : google_cloud_run_v2_service.gateway.uri
}

output "gateway_load_balancer_ip" {
  description = "With gateway_domain: the load balancer's address, for the domain's DNS A record (clients then use https://DOMAIN)."
  value       = local.load_balanced ? google_compute_global_address.gateway[0].address : null
}

output "write_keys_secret" {
  description = "Secret Manager secret holding the gateway write keys (read: gcloud secrets versions access latest --secret=...)."
  value       = google_secret_manager_secret.secrets["write_keys"].secret_id
}

output "dashboard_instance" {
  description = "Name of the dashboard VM."
  value       = google_compute_instance.dashboard.name
}

output "dashboard_zone" {
  description = "Zone of the dashboard VM."
  value       = google_compute_instance.dashboard.zone
}

output "dashboard_iap_command" {
  description = "Opens the dashboard at http://localhost:8050 through an IAP tunnel."
  value       = "gcloud compute start-iap-tunnel ${google_compute_instance.dashboard.name} ${local.dashboard_port} --local-host-port=localhost:${local.dashboard_port} --zone=${var.zone} --project=${var.project_id}"
}

output "dashboard_ssh_command" {
  description = "SSH to the dashboard VM through IAP (OS Login), e.g. to run `sudo clickstream-admin db migrate`."
  value       = "gcloud compute ssh ${google_compute_instance.dashboard.name} --tunnel-through-iap --zone=${var.zone} --project=${var.project_id}"
}

output "topics" {
  description = "Pub/Sub topic names."
  value = {
    events      = google_pubsub_topic.events.name
    bad_events  = google_pubsub_topic.bad_events.name
    dead_letter = google_pubsub_topic.dead_letter.name
  }
}

output "subscriptions" {
  description = "Pub/Sub subscription names."
  value = merge(
    { for k, s in google_pubsub_subscription.processor : k => s.name },
    { dead_letter = google_pubsub_subscription.dead_letter_hold.name },
  )
}

output "processor_function" {
  description = "Name of the processor Cloud Function."
  value       = google_cloudfunctions2_function.processor.name
}

output "bigquery_dataset" {
  description = "BigQuery dataset as project.dataset."
  value       = "${var.project_id}.${google_bigquery_dataset.main.dataset_id}"
}

output "sql_connection_name" {
  description = "Cloud SQL connection name (for cloud-sql-proxy --private-ip from inside the VPC)."
  value       = google_sql_database_instance.main.connection_name
}

output "sql_private_ip" {
  description = "Private IP of Cloud SQL (reachable only from the VPC)."
  value       = google_sql_database_instance.main.private_ip_address
}

output "db_password_secret" {
  description = "Secret Manager secret holding the database password."
  value       = google_secret_manager_secret.secrets["db_password"].secret_id
}

output "artifact_registry" {
  description = "Docker repository for the gateway image."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images["gateway"].repository_id}"
}
