# Source archives built from this repository, each holding one deployable and the contract it
# imports (see the README's "How the code gets deployed"):
#   processor.zip   the Cloud Function: main.py, requirements.txt, requirements.lock, processor/,
#                   clickstream_contract/
#   dashboard.zip   the dashboard VM's service: requirements.lock, clickstream_contract/, dashboard/
#   operations.zip  the operator's tools on that VM: the development distribution and every part
# Files are listed explicitly (text sources only), so builds are reproducible and no cache,
# virtualenv or secret in the work tree can slip in. tests/test_packaging.py builds and installs
# each archive from these very expressions.

locals {
  repo_root = "${path.module}/.."

  # What a local `pip install` (build/, *.egg-info/) or a run (__pycache__/) leaves inside a
  # package folder: never archived, whatever the patterns below match.
  install_leftovers = "(^|/)(build|dist|__pycache__|[^/]*\\.egg-info)/"

  # The function: its entry point, requirements and the lock they are constrained by at the
  # root, then the processor's and the contract's sources (the build installs requirements.txt,
  # not these folders' pyprojects).
  processor_files = merge(
    { for f in fileset("${path.module}/function", "{main.py,requirements.txt}") : f => "${path.module}/function/${f}" },
    { for f in ["requirements.lock"] : f => "${local.repo_root}/${f}" },
    { for f in fileset(local.repo_root, "{processor,clickstream_contract}/**/*.{py,sql}") : f => "${local.repo_root}/${f}" if length(regexall(local.install_leftovers, f)) == 0 },
  )

  # The dashboard service: two installable folders and the lock, installed with
  # `pip install -c requirements.lock ./clickstream_contract ./dashboard`.
  dashboard_files = merge(
    { for f in ["requirements.lock"] : f => "${local.repo_root}/${f}" },
    { for f in fileset(local.repo_root, "{clickstream_contract,dashboard}/**/{pyproject.toml,*.py,*.html,*.js,*.css,*.svg}") : f => "${local.repo_root}/${f}" if length(regexall(local.install_leftovers, f)) == 0 },
  )

  # The operator's tools on the same VM (`clickstream db migrate` at boot, `clickstream-admin`):
  # the development distribution (root pyproject, clickstream/) with every part, installed
  # without its extras, apart from the dashboard's service. The readmes are those the
  # pyprojects name.
  operations_files = merge(
    { for f in ["pyproject.toml", "README.md", "requirements.lock", "clickstream_sdk/README.md"] : f => "${local.repo_root}/${f}" },
    { for f in fileset(local.repo_root, "{clickstream,clickstream_contract,gateway,processor,dashboard,clickstream_sdk}/**/{pyproject.toml,*.py,*.sql,*.html,*.js,*.css,*.svg}") : f => "${local.repo_root}/${f}" if length(regexall(local.install_leftovers, f)) == 0 },
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

data "archive_file" "operations" {
  type        = "zip"
  output_path = "${path.module}/build/operations.zip"

  dynamic "source" {
    for_each = local.operations_files
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

resource "google_storage_bucket_object" "operations" {
  name   = "operations-${data.archive_file.operations.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.operations.output_path
}

# The gateway image's build context, uploaded by `gcloud builds submit` (README step 2) and
# read by the image builder's account only.
resource "google_storage_bucket" "builds" {
  #checkov:skip=CKV_GCP_62:holds only build contexts of this repository, deleted after a week; usage logs would need another bucket (that itself fails this check) and Cloud Audit Logs already record admin access
  name                        = "${var.project_id}-${local.name}-builds"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Container images, each repository written by one build's account only (iam.tf): the gateway
# image (see README: build and push before the first full apply), and the function's image,
# which Cloud Functions builds from the processor archive.
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:images contain only this repository's public code; Google-managed encryption at rest
  for_each = {
    gateway   = { id = local.name, description = "clickstream gateway image" }
    processor = { id = "${local.name}-functions", description = "clickstream processor function images (built by Cloud Functions)" }
  }

  repository_id = each.value.id
  location      = var.region
  format        = "DOCKER"
  description   = each.value.description

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }

  depends_on = [google_project_service.apis]
}
