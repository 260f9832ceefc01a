# Source archives built from this repository: one for the processor function, one the
# dashboard VM installs with pip. Files are listed explicitly (text sources only), so builds
# are reproducible and no cache, virtualenv or secret in the work tree can slip in.

locals {
  repo_root = "${path.module}/.."

  # The function: its entry point and requirements at the root, then the two packages.
  processor_files = merge(
    { for f in fileset("${path.module}/function", "*.{py,txt}") : f => "${path.module}/function/${f}" },
    { for f in fileset(local.repo_root, "{processor,clickstream}/**/*.{py,sql}") : f => "${local.repo_root}/${f}" },
  )

  # The dashboard: an installable source tree (pyproject + every package + package data):
  # the `clickstream` command imports each part's CLI, so all packages must be there.
  dashboard_files = merge(
    { for f in ["pyproject.toml", "README.md"] : f => "${local.repo_root}/${f}" },
    { for f in fileset(local.repo_root, "{clickstream,clickstream_sdk,gateway,processor,dashboard}/**/*.{py,sql,html,js,css,svg}") : f => "${local.repo_root}/${f}" },
  )
}

data "archive_file" "processor" {
  type        = "zip"
  output_path = "${path.module}/build/processor.zip"

  dynamic "source" {
    for_each = local.processor_files
    content {
      filename = source.key
      content  = file(source.value)
    }
  }
}

data "archive_file" "dashboard" {
  type        = "zip"
  output_path = "${path.module}/build/dashboard.zip"

  dynamic "source" {
    for_each = local.dashboard_files
    content {
      filename = source.key
      content  = file(source.value)
    }
  }
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:holds only build archives of this repository, readable by two service accounts; usage logs would need another bucket (that itself fails this check) and Cloud Audit Logs already record admin access
  name                        = "${var.project_id}-${local.name}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # it holds only build artifacts this configuration recreates

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 3
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Objects are named by content hash: a changed source is a new object, which redeploys.
resource "google_storage_bucket_object" "processor" {
  name   = "processor-${data.archive_file.processor.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.processor.output_path
}

resource "google_storage_bucket_object" "dashboard" {
  name   = "dashboard-${data.archive_file.dashboard.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.dashboard.output_path
}

# Gateway images (see README: build and push before the first full apply).
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:images contain only this repository's public code; Google-managed encryption at rest
  repository_id = local.name
  location      = var.region
  format        = "DOCKER"
  description   = "clickstream container images"

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }

  depends_on = [google_project_service.apis]
}
