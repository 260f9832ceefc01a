# events      <- gateway publishes accepted events
# events-bad  <- gateway publishes events it refused (kept, never dropped)
# Both are pushed to the processor function by subscriptions Terraform owns, so the dead-letter
# and retry policies are ours (a function's own Eventarc trigger hides its subscription).
# After max_delivery_attempts a message moves to events-dead-letter, held for inspection and
# replay by the events-dead-letter-hold subscription.

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:encrypted at rest with Google-managed keys; messages live at most 7 days and CMEK would add a KMS key to operate for no stated requirement
  name                       = local.topics.events
  message_retention_duration = var.message_retention_duration
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_topic" "bad_events" {
  #checkov:skip=CKV_GCP_83:encrypted at rest with Google-managed keys; messages live at most 7 days and CMEK would add a KMS key to operate for no stated requirement
  name                       = local.topics.bad_events
  message_retention_duration = var.message_retention_duration
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:encrypted at rest with Google-managed keys; messages live at most 7 days and CMEK would add a KMS key to operate for no stated requirement
  name                       = local.topics.dead_letter
  message_retention_duration = var.message_retention_duration
  depends_on                 = [google_project_service.apis]
}

locals {
  # Subscription names are clickstream_contract.config.Settings' defaults after name_prefix.
  processor_subscriptions = {
    events     = { name = "${local.name}-events-processor", topic = google_pubsub_topic.events.id }
    bad_events = { name = "${local.name}-events-bad-processor", topic = google_pubsub_topic.bad_events.id }
  }
}

resource "google_pubsub_subscription" "processor" {
  for_each = local.processor_subscriptions

  name                       = each.value.name
  topic                      = each.value.topic
  ack_deadline_seconds       = local.processor_timeout_seconds
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = false

  push_config {
    push_endpoint = google_cloudfunctions2_function.processor.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.processor.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = "" # never expire, even when idle
  }

  depends_on = [
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
    google_cloud_run_v2_service_iam_member.push_invokes_processor,
  ]
}

resource "google_pubsub_subscription" "dead_letter_hold" {
  name                       = "${local.name}-events-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }
}

# The dead-letter policy acts as Pub/Sub's service agent: it must publish to the dead-letter
# topic and acknowledge (subscribe) on the source subscriptions.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = google_pubsub_subscription.processor

  subscription = each.value.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
