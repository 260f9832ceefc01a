# The analytics dataset. View queries are the processor's own files
# (processor/bigquery_views/), which it also creates when missing. Table schemas are files under
# bigquery/, generated from processor/bigquery_schema.py and kept equal to it by
# tests/test_terraform.py.

resource "google_bigquery_dataset" "main" {
  dataset_id    = "clickstream"
  friendly_name = "clickstream analytics"
  description   = "Enriched clickstream events, refused events and per-customer rollups."
  location      = local.bigquery_location

  dynamic "default_encryption_configuration" {
    for_each = var.bigquery_kms_key_name == null ? [] : [var.bigquery_kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }

  depends_on = [google_project_service.apis]
}

# Access entries are added one by one (the dataset's own access list is left to its defaults:
# mixing the two would make each undo the other on every apply).
resource "google_bigquery_dataset_access" "admin" {
  dataset_id    = google_bigquery_dataset.main.dataset_id
  role          = "OWNER"
  user_by_email = var.admin_email
}

# Nobody else reads this dataset: its events carry client addresses and user ids. Analysts
# read the views of the analyst dataset below, which leave those columns out.

# The processor appends rows with the Storage Write API (bigquery.tables.updateData) and
# creates missing tables; dataEditor on this dataset grants both. It runs no query jobs.
resource "google_bigquery_dataset_access" "processor_writer" {
  dataset_id    = google_bigquery_dataset.main.dataset_id
  role          = "WRITER"
  user_by_email = google_service_account.processor.email
}

# The scheduled refresh of customer_daily reads the raw events: it is a reader of this dataset
# (which also gives it bigquery.datasets.get, which a scheduled query needs on its dataset) and
# writes customer_daily only (iam.tf).
resource "google_bigquery_dataset_access" "rollups_reader" {
  dataset_id    = google_bigquery_dataset.main.dataset_id
  role          = "READER"
  user_by_email = google_service_account.rollups.email
}

resource "google_bigquery_table" "events" {
  dataset_id          = google_bigquery_dataset.main.dataset_id
  table_id            = "events"
  description         = "Enriched events, at least once: read events_dedup for exact counts."
  schema              = file("${path.module}/bigquery/events.schema.json")
  deletion_protection = var.deletion_protection
  clustering          = ["event_type", "user_id"]

  time_partitioning {
    type          = "DAY"
    field         = "occurred_at"
    expiration_ms = var.events_partition_expiration_days == null ? null : var.events_partition_expiration_days * 86400000
  }

  dynamic "encryption_configuration" {
    for_each = var.bigquery_kms_key_name == null ? [] : [var.bigquery_kms_key_name]
    content {
      kms_key_name = encryption_configuration.value
    }
  }
}

resource "google_bigquery_table" "bad_events" {
  dataset_id          = google_bigquery_dataset.main.dataset_id
  table_id            = "bad_events"
  description         = "Events or messages that could never be processed, with reason."
  schema              = file("${path.module}/bigquery/bad_events.schema.json")
  deletion_protection = var.deletion_protection

  time_partitioning {
    type  = "DAY"
    field = "received_at"
  }

  dynamic "encryption_configuration" {
    for_each = var.bigquery_kms_key_name == null ? [] : [var.bigquery_kms_key_name]
    content {
      kms_key_name = encryption_configuration.value
    }
  }
}

resource "google_bigquery_table" "events_dedup" {
  #checkov:skip=CKV_GCP_80:a view stores no data; the tables it reads follow bigquery_kms_key_name
  dataset_id          = google_bigquery_dataset.main.dataset_id
  table_id            = "events_dedup"
  description         = "events with one row per event_id (the first received)."
  deletion_protection = var.deletion_protection

  view {
    query          = templatefile("${local.repo_root}/processor/bigquery_views/events_dedup.sql", { project = var.project_id, dataset = google_bigquery_dataset.main.dataset_id })
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.events]
}

# customer_daily: one row per customer and day, refreshed by the scheduled query below, so
# customer_analytics sums it instead of deduplicating every event on every query. Its rows
# outlive events partitions that expire (events_partition_expiration_days).
resource "google_bigquery_table" "customer_daily" {
  dataset_id          = google_bigquery_dataset.main.dataset_id
  table_id            = "customer_daily"
  description         = "One row per customer and day from the deduplicated events, refreshed by a scheduled query."
  schema              = file("${path.module}/bigquery/customer_daily.schema.json")
  deletion_protection = var.deletion_protection
  clustering          = ["visitor_key"]

  time_partitioning {
    type  = "DAY"
    field = "day"
  }

  dynamic "encryption_configuration" {
    for_each = var.bigquery_kms_key_name == null ? [] : [var.bigquery_kms_key_name]
    content {
      kms_key_name = encryption_configuration.value
    }
  }
}

resource "google_bigquery_table" "customer_analytics" {
  #checkov:skip=CKV_GCP_80:a view stores no data; the tables it reads follow bigquery_kms_key_name
  dataset_id          = google_bigquery_dataset.main.dataset_id
  table_id            = "customer_analytics"
  description         = "Per-customer rollups over customer_daily."
  deletion_protection = var.deletion_protection

  view {
    query          = templatefile("${local.repo_root}/processor/bigquery_views/customer_analytics.sql", { project = var.project_id, dataset = google_bigquery_dataset.main.dataset_id })
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.customer_daily]
}

# The refresh: BigQuery runs the processor's MERGE statement (the one the tests run on the
# emulator) every customer_daily_refresh_hours as the rollups service account, with @run_time
# set to the scheduled time. Each run recomputes the last customer_daily_refresh_days whole days
# (and today) from those partitions of events only. A MERGE run twice gives the same rows, so
# a run the scheduler repeats does no harm.
resource "google_bigquery_data_transfer_config" "customer_daily" {
  display_name         = "${local.name} customer_daily refresh"
  location             = local.bigquery_location
  data_source_id       = "scheduled_query"
  schedule             = "every ${var.customer_daily_refresh_hours} hours"
  service_account_name = google_service_account.rollups.email

  params = {
    query = templatefile("${local.repo_root}/processor/bigquery_views/customer_daily_merge.sql", { project = var.project_id, dataset = google_bigquery_dataset.main.dataset_id, days = var.customer_daily_refresh_days, reporting_currency = var.reporting_currency })
  }

  depends_on = [
    google_project_service.apis,
    google_bigquery_table.events,
    google_bigquery_table.customer_daily,
    google_bigquery_dataset_access.rollups_reader,
    google_bigquery_table_iam_member.rollups_write_customer_daily,
    google_project_iam_member.rollups_run_queries,
    google_service_account_iam_member.transfer_agent_mints_rollups_tokens,
  ]
}

# --- what analysts read -------------------------------------------------------------------------
# A dataset of views over the one above without the columns that identify a person (client
# address, user agent, user and anonymous ids, and visitor_key, which is the user id when
# known). The views are authorised on the source dataset,
# so var.analysts_group reads them without any access to the source tables.

locals {
  # Each view: its source and the identifying columns the source has.
  analyst_views = {
    events = {
      source      = google_bigquery_table.events_dedup.table_id
      leave_out   = ["client_ip", "user_agent", "user_id", "anonymous_id", "visitor_key"]
      description = "events_dedup without the columns that identify a person."
    }
    customer_analytics = {
      source      = google_bigquery_table.customer_analytics.table_id
      leave_out   = ["user_id", "visitor_key"]
      description = "customer_analytics without the columns that identify a person."
    }
  }
}

resource "google_bigquery_dataset" "analyst" {
  dataset_id    = "clickstream_analyst"
  friendly_name = "clickstream for analysts"
  description   = "Views of the clickstream dataset without the columns that identify a person."
  location      = local.bigquery_location

  dynamic "default_encryption_configuration" {
    for_each = var.bigquery_kms_key_name == null ? [] : [var.bigquery_kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "analyst" {
  #checkov:skip=CKV_GCP_80:a view stores no data; the tables it reads follow bigquery_kms_key_name
  for_each = local.analyst_views

  dataset_id          = google_bigquery_dataset.analyst.dataset_id
  table_id            = each.key
  description         = each.value.description
  deletion_protection = var.deletion_protection

  view {
    query          = "SELECT * EXCEPT (${join(", ", each.value.leave_out)}) FROM `${var.project_id}.${google_bigquery_dataset.main.dataset_id}.${each.value.source}`"
    use_legacy_sql = false
  }
}

resource "google_bigquery_dataset_access" "analyst_views" {
  for_each = google_bigquery_table.analyst

  dataset_id = google_bigquery_dataset.main.dataset_id
  view {
    project_id = var.project_id
    dataset_id = google_bigquery_dataset.analyst.dataset_id
    table_id   = each.value.table_id
  }
}

resource "google_bigquery_dataset_access" "analysts" {
  count = var.analysts_group == null ? 0 : 1

  dataset_id     = google_bigquery_dataset.analyst.dataset_id
  role           = "READER"
  group_by_email = var.analysts_group

  lifecycle {
    precondition {
      condition     = endswith(coalesce(var.analysts_group, "@"), "@${var.organization_domain}")
      error_message = "analysts_group must be a group of organization_domain."
    }
  }
}

resource "google_bigquery_dataset_access" "analyst_admin" {
  dataset_id    = google_bigquery_dataset.analyst.dataset_id
  role          = "OWNER"
  user_by_email = var.admin_email
}
