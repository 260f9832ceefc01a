# Alerts to admin_email: gateway errors and latency, processing backlog, dead letters, function
# errors, Cloud SQL CPU and disk. Plus BigQuery data-access audit logs and an optional budget.

resource "google_monitoring_notification_channel" "admin_email" {
  display_name = "clickstream operator (${var.admin_email})"
  type         = "email"
  labels = {
    email_address = var.admin_email
  }
  depends_on = [google_project_service.apis]
}

locals {
  notification_channels = [google_monitoring_notification_channel.admin_email.id]
  sql_database_id       = "${var.project_id}:${google_sql_database_instance.main.name}"
  gateway_requests      = "run_googleapis_com:request_count{monitored_resource=\"cloud_run_revision\",service_name=\"${google_cloud_run_v2_service.gateway.name}\"}"
}

resource "google_monitoring_alert_policy" "gateway_5xx_ratio" {
  display_name = "clickstream gateway: 5xx ratio above ${var.alert_gateway_5xx_ratio * 100}%"
  combiner     = "OR"

  conditions {
    display_name = "5xx responses / all responses over 5 minutes"
    condition_prometheus_query_language {
      query = join("", [
        "sum(rate(run_googleapis_com:request_count{monitored_resource=\"cloud_run_revision\",service_name=\"${google_cloud_run_v2_service.gateway.name}\",response_code_class=\"5xx\"}[5m]))",
        " / sum(rate(${local.gateway_requests}[5m])) > ${var.alert_gateway_5xx_ratio}",
      ])
      duration            = "300s"
      evaluation_interval = "60s"
    }
  }

  notification_channels = local.notification_channels
  documentation {
    content   = "The gateway answers 5xx only when Pub/Sub is unreachable or the process fails (bad input gets 4xx). Check the gateway's logs and its /ready path."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "gateway_latency" {
  display_name = "clickstream gateway: p99 latency above ${var.alert_gateway_p99_latency_ms} ms"
  combiner     = "OR"

  conditions {
    display_name = "p99 request latency"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${google_cloud_run_v2_service.gateway.name}\" AND metric.type = \"run.googleapis.com/request_latencies\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_gateway_p99_latency_ms
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_PERCENTILE_99"
        cross_series_reducer = "REDUCE_MAX"
      }
    }
  }

  notification_channels = local.notification_channels
}

resource "google_monitoring_alert_policy" "oldest_unacked" {
  display_name = "clickstream processor: backlog older than ${var.alert_oldest_unacked_seconds} s"
  combiner     = "OR"

  conditions {
    display_name = "oldest unacknowledged message age"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.processor["events"].name}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_oldest_unacked_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  notification_channels = local.notification_channels
  documentation {
    content   = "The processor falls behind or fails: check the function's errors and Cloud SQL."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name = "clickstream: messages dead-lettered"
  combiner     = "OR"

  conditions {
    display_name = "messages forwarded to ${google_pubsub_topic.dead_letter.name}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  notification_channels = local.notification_channels
  documentation {
    content   = "Messages failed ${var.max_delivery_attempts} deliveries. They wait in subscription ${google_pubsub_subscription.dead_letter_hold.name}; see README 'Dead letters' to inspect and replay them."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "function_errors" {
  display_name = "clickstream processor: function errors"
  combiner     = "OR"

  conditions {
    # Cloud Run labels the series with the short service name, which for a gen2 function is
    # the function's name (service_config[0].service is the full resource path).
    display_name = "processor 5xx responses (Pub/Sub will retry them)"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${google_cloudfunctions2_function.processor.name}\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code_class = \"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = 1
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  notification_channels = local.notification_channels
}

resource "google_monitoring_alert_policy" "sql_cpu" {
  display_name = "clickstream Cloud SQL: CPU above 80%"
  combiner     = "OR"

  conditions {
    display_name = "CPU utilization"
    condition_threshold {
      filter          = "resource.type = \"cloudsql_database\" AND resource.labels.database_id = \"${local.sql_database_id}\" AND metric.type = \"cloudsql.googleapis.com/database/cpu/utilization\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0.8
      duration        = "600s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MEAN"
      }
    }
  }

  notification_channels = local.notification_channels
}

resource "google_monitoring_alert_policy" "sql_disk" {
  display_name = "clickstream Cloud SQL: disk above 85%"
  combiner     = "OR"

  conditions {
    display_name = "disk utilization"
    condition_threshold {
      filter          = "resource.type = \"cloudsql_database\" AND resource.labels.database_id = \"${local.sql_database_id}\" AND metric.type = \"cloudsql.googleapis.com/database/disk/utilization\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0.85
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MEAN"
      }
    }
  }

  notification_channels = local.notification_channels
}

# Who read or changed which BigQuery data: data-access audit logs are off by default.
resource "google_project_iam_audit_config" "bigquery" {
  project = var.project_id
  service = "bigquery.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

resource "google_billing_budget" "monthly" {
  count = var.billing_account == null ? 0 : 1

  billing_account = var.billing_account
  display_name    = "clickstream ${var.project_id} monthly"

  budget_filter {
    projects = ["projects/${data.google_project.this.number}"]
  }

  amount {
    specified_amount {
      units = tostring(var.monthly_budget)
    }
  }

  dynamic "threshold_rules" {
    for_each = [0.5, 0.9, 1.0]
    content {
      threshold_percent = threshold_rules.value
    }
  }

  all_updates_rule {
    monitoring_notification_channels = local.notification_channels
    disable_default_iam_recipients   = false
  }
}
