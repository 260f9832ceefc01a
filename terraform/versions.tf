# Provider versions are pinned to a minor range: 7.21 is the first google release with Direct
# VPC egress for Cloud Functions gen2 (service_config.direct_vpc_network_interface).
# Terraform 1.11 is the first with write-only arguments (secret_data_wo, password_wo): with
# them and ephemeral values no password or key is ever written to state (secrets.tf).
terraform {
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.21"
    }
    # Only for google_project_service_identity (apis.tf), which the GA provider lacks.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 7.21"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
    # 3.7 is the first with ephemeral random_password.
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }
}

# With user credentials (gcloud auth application-default login), APIs that bill the caller's
# project, the budgets API above all, need a quota project: bill this one.
provider "google" {
  project               = var.project_id
  region                = var.region
  zone                  = var.zone
  user_project_override = true
  billing_project       = var.project_id

  default_labels = merge(var.labels, { app = var.name_prefix, managed-by = "terraform" })
}

provider "google-beta" {
  project               = var.project_id
  region                = var.region
  user_project_override = true
  billing_project       = var.project_id
}
