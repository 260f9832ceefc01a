# Provider versions are pinned to a minor range: 7.21 is the first google release with Direct
# VPC egress for Cloud Functions gen2 (service_config.direct_vpc_network_interface).
terraform {
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.21"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
  zone    = var.zone

  default_labels = merge(var.labels, { app = var.name_prefix, managed-by = "terraform" })
}
