# The seed's six variables come first (project_id, region, zone, db_password, admin_email,
# organization_domain); everything after them has a default that is safe for production.

variable "project_id" {
  description = "Google Cloud project that receives every resource (billing must be enabled)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of every regional resource (Cloud Run, Functions, Cloud SQL, subnets)."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region name such as us-central1."
  }
}

variable "zone" {
  description = "Zone of the dashboard VM; must lie in var.region."
  type        = string
  default     = "us-central1-a"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", var.zone)) && startswith(var.zone, "${var.region}-")
    error_message = "zone must be a zone of var.region, such as us-central1-a."
  }
}

variable "db_password" {
  description = "Password of the Cloud SQL application user. Leave null to have a 32-character one generated; either way it goes to Secret Manager and Cloud SQL through write-only arguments, never into state or outputs."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.db_password == null || length(coalesce(var.db_password, "x")) >= 16
    error_message = "db_password must be at least 16 characters (or null to generate one)."
  }
}

variable "admin_email" {
  description = "Operator e-mail: receives alerts and budget mails, owns the BigQuery dataset, may use IAP to reach the dashboard."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$", var.admin_email))
    error_message = "admin_email must be an e-mail address."
  }
}

variable "organization_domain" {
  description = "Google Workspace / Cloud Identity domain of the organisation: analysts_group must belong to it."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.organization_domain))
    error_message = "organization_domain must be a domain name such as example.com."
  }
}

variable "analysts_group" {
  description = "Google group (name@organization_domain) whose members may query the analyst dataset: views without client addresses, user agents or user ids. null: only admin_email reads BigQuery."
  type        = string
  default     = null

  validation {
    condition     = var.analysts_group == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$", coalesce(var.analysts_group, "x")))
    error_message = "analysts_group must be a group's e-mail address (or null)."
  }
}

variable "name_prefix" {
  description = "Prefix of resource names (service accounts, instance, function, secrets)."
  type        = string
  default     = "clickstream"

  validation {
    # The longest name built on it, the service account id NAME-processor-build, may have 30.
    condition     = can(regex("^[a-z][a-z0-9-]{1,12}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-14 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "labels" {
  description = "Extra labels put on every resource that takes labels."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "labels keys and values must be lowercase letters, digits, '_' or '-' (keys start with a letter)."
  }
}

# --- network -------------------------------------------------------------------------------

variable "private_services_cidr" {
  description = "Range allocated to private services access, where Cloud SQL takes its private IP (the data tier's managed part)."
  type        = string
  default     = "10.0.16.0/20"

  validation {
    condition     = can(cidrhost(var.private_services_cidr, 0)) && tonumber(split("/", var.private_services_cidr)[1]) <= 24
    error_message = "private_services_cidr must be a CIDR block of /24 or larger."
  }
}

# --- gateway -------------------------------------------------------------------------------

variable "gateway_image" {
  description = "Container image of the ingestion gateway, e.g. us-central1-docker.pkg.dev/PROJECT/clickstream/gateway@sha256:... (see README: build and push)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$", var.gateway_image))
    error_message = "gateway_image must be a full image reference with a tag or digest."
  }
}

variable "gateway_min_instances" {
  description = "Cloud Run instances kept warm for the gateway (0 scales to zero; 1 avoids cold starts)."
  type        = number
  default     = 1

  validation {
    condition     = var.gateway_min_instances >= 0 && var.gateway_min_instances <= 100
    error_message = "gateway_min_instances must be between 0 and 100."
  }
}

variable "gateway_max_instances" {
  description = "Upper bound of gateway instances: caps cost and the IPs used in the public subnet by Direct VPC egress."
  type        = number
  default     = 20

  validation {
    condition     = var.gateway_max_instances >= 1 && var.gateway_max_instances <= 100
    error_message = "gateway_max_instances must be between 1 and 100 (the public /24 holds about 100 instances)."
  }
}

variable "gateway_concurrency" {
  description = "Concurrent requests per gateway instance (the gateway is async; requests are short)."
  type        = number
  default     = 250

  validation {
    condition     = var.gateway_concurrency >= 1 && var.gateway_concurrency <= 1000
    error_message = "gateway_concurrency must be between 1 and 1000."
  }
}

variable "gateway_cpu" {
  description = "vCPUs per gateway instance."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "4", "8"], var.gateway_cpu)
    error_message = "gateway_cpu must be one of 1, 2, 4, 8."
  }
}

variable "gateway_memory" {
  description = "Memory per gateway instance."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.gateway_memory))
    error_message = "gateway_memory must look like 512Mi or 2Gi."
  }
}

variable "gateway_cors_origins" {
  description = "Browser origins allowed to call the gateway cross-origin (exact origins such as https://shop.example.com)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for o in var.gateway_cors_origins : can(regex("^https?://[^/]+$", o))])
    error_message = "gateway_cors_origins entries must be origins: scheme://host[:port], no path."
  }
}

variable "gateway_domain" {
  description = "Domain name (e.g. collect.shop.example.com) for an external HTTPS load balancer with Cloud Armor rate limiting in front of the gateway (loadbalancer.tf); its DNS A record must point at output gateway_load_balancer_ip. null: clients call the gateway's run.app URL directly."
  type        = string
  default     = null

  validation {
    condition     = var.gateway_domain == null || can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", coalesce(var.gateway_domain, "x")))
    error_message = "gateway_domain must be a fully qualified domain name such as collect.example.com (or null)."
  }
}

variable "gateway_rate_limit_per_minute" {
  description = "With gateway_domain: requests one client address may send a minute before Cloud Armor answers 429 (SDKs batch events, so a browser sends few)."
  type        = number
  default     = 600

  validation {
    condition     = var.gateway_rate_limit_per_minute >= 10 && var.gateway_rate_limit_per_minute <= 1000000
    error_message = "gateway_rate_limit_per_minute must be between 10 and 1000000."
  }
}

variable "write_keys" {
  description = "Gateway write keys as 'key=source,key2=source2'. Leave null to have one key for source 'web' generated (read it from Secret Manager). Written only when secret_versions.write_keys changes."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.write_keys == null || can(regex("^[^=,\\s]{16,}(=[A-Za-z0-9_.-]+)?(,[^=,\\s]{16,}(=[A-Za-z0-9_.-]+)?)*$", coalesce(var.write_keys, "x")))
    error_message = "write_keys must be 'key=source' pairs separated by commas, each key at least 16 characters."
  }
}

# --- Pub/Sub and processor ---------------------------------------------------------------------

variable "max_delivery_attempts" {
  description = "Deliveries of one message to the processor before Pub/Sub moves it to the dead-letter topic."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub's limits)."
  }
}

variable "message_retention_duration" {
  description = "How long Pub/Sub keeps messages (topics and subscriptions): the window for replay after an outage."
  type        = string
  default     = "604800s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.message_retention_duration)) && tonumber(trimsuffix(var.message_retention_duration, "s")) >= 600 && tonumber(trimsuffix(var.message_retention_duration, "s")) <= 604800
    error_message = "message_retention_duration must be between 600s and 604800s (7 days)."
  }
}

variable "retention_days" {
  description = "Days the processor keeps each event's dedup key and the dashboard's customer timeline rows: every function instance prunes older ones when it starts and hourly. Aggregates, sessions and customer profiles are kept. Longer than message_retention_duration, or a message redelivered or replayed after its keys were pruned would count again."
  type        = number
  default     = 30

  validation {
    condition     = var.retention_days >= 8 && var.retention_days <= 3650 && var.retention_days * 86400 > tonumber(trimsuffix(var.message_retention_duration, "s"))
    error_message = "retention_days must be between 8 and 3650, and longer than message_retention_duration."
  }
}

variable "processor_max_instances" {
  description = "Upper bound of processor function instances (each holds database connections: keep it below Cloud SQL's max_connections / pool size)."
  type        = number
  default     = 10

  validation {
    condition     = var.processor_max_instances >= 1 && var.processor_max_instances <= 100
    error_message = "processor_max_instances must be between 1 and 100."
  }
}

variable "processor_memory" {
  description = "Memory per processor function instance."
  type        = string
  default     = "1Gi"

  validation {
    condition     = contains(["512Mi", "1Gi", "2Gi", "4Gi"], var.processor_memory)
    error_message = "processor_memory must be one of 512Mi, 1Gi, 2Gi, 4Gi."
  }
}

variable "processor_concurrency" {
  description = "Pub/Sub messages one processor instance handles at once."
  type        = number
  default     = 8

  validation {
    condition     = var.processor_concurrency >= 1 && var.processor_concurrency <= 80
    error_message = "processor_concurrency must be between 1 and 80."
  }
}

# --- Cloud SQL -------------------------------------------------------------------------------

variable "db_version" {
  description = "Cloud SQL PostgreSQL major version."
  type        = string
  default     = "POSTGRES_18"

  validation {
    condition     = contains(["POSTGRES_16", "POSTGRES_17", "POSTGRES_18"], var.db_version)
    error_message = "db_version must be POSTGRES_16, POSTGRES_17 or POSTGRES_18."
  }
}

variable "db_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-2-7680"

  validation {
    condition     = can(regex("^db-(custom-[0-9]+-[0-9]+|perf-optimized-N-[0-9]+)$", var.db_tier))
    error_message = "db_tier must be a dedicated-core tier such as db-custom-2-7680 (shared-core tiers have no SLA)."
  }
}

variable "db_availability_type" {
  description = "REGIONAL (high availability, standby in a second zone) or ZONAL (half the price, no failover)."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.db_availability_type)
    error_message = "db_availability_type must be REGIONAL or ZONAL."
  }
}

variable "db_disk_size_gb" {
  description = "Initial Cloud SQL disk size in GB (grows automatically)."
  type        = number
  default     = 20

  validation {
    condition     = var.db_disk_size_gb >= 10 && var.db_disk_size_gb <= 10000
    error_message = "db_disk_size_gb must be between 10 and 10000."
  }
}

variable "db_name" {
  description = "Name of the application database."
  type        = string
  default     = "clickstream"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must be a lowercase PostgreSQL identifier."
  }
}

variable "db_user" {
  description = "Name of the application database user."
  type        = string
  default     = "clickstream"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_user)) && var.db_user != "postgres"
    error_message = "db_user must be a lowercase PostgreSQL identifier other than postgres."
  }
}

variable "deletion_protection" {
  description = "Protect Cloud SQL and the BigQuery events table from terraform destroy (set false only to tear down on purpose)."
  type        = bool
  default     = true
}

# --- BigQuery --------------------------------------------------------------------------------

variable "bigquery_location" {
  description = "BigQuery dataset location; null means var.region."
  type        = string
  default     = null

  validation {
    condition     = var.bigquery_location == null || can(regex("^(US|EU|[a-z]+-[a-z]+[0-9]+)$", coalesce(var.bigquery_location, "US")))
    error_message = "bigquery_location must be US, EU or a region name."
  }
}

variable "bigquery_kms_key_name" {
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) encrypting the dataset (CMEK); null uses Google-managed keys. BigQuery's service agent needs roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  type        = string
  default     = null

  validation {
    condition     = var.bigquery_kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", coalesce(var.bigquery_kms_key_name, "x")))
    error_message = "bigquery_kms_key_name must be a full Cloud KMS crypto key name."
  }
}

variable "events_partition_expiration_days" {
  description = "Days after which an events partition is deleted; null keeps data forever."
  type        = number
  default     = null

  validation {
    condition     = var.events_partition_expiration_days == null || coalesce(var.events_partition_expiration_days, 1) >= 1
    error_message = "events_partition_expiration_days must be at least 1 (or null)."
  }
}

variable "reporting_currency" {
  description = "ISO 4217 code of the currency every revenue figure is reported in: the processor converts each order into it at the rate of its day (rates loaded with `clickstream rates load`), the dashboard labels it, customer_daily sums it."
  type        = string
  default     = "EUR"

  validation {
    condition     = can(regex("^[A-Z]{3}$", var.reporting_currency))
    error_message = "reporting_currency must be three upper-case letters, an ISO 4217 code such as EUR."
  }
}

variable "customer_daily_refresh_hours" {
  description = "Hours between two refreshes of customer_daily (customer_analytics lags by up to this)."
  type        = number
  default     = 6

  validation {
    condition     = contains([1, 2, 3, 4, 6, 8, 12, 24], var.customer_daily_refresh_hours)
    error_message = "customer_daily_refresh_hours must divide a day: 1, 2, 3, 4, 6, 8, 12 or 24."
  }
}

variable "customer_daily_refresh_days" {
  description = "Whole days before today each customer_daily refresh recomputes: events that arrive later than that are counted only by a backfill run."
  type        = number
  default     = 3

  validation {
    condition     = var.customer_daily_refresh_days >= 1 && var.customer_daily_refresh_days <= 30 && floor(var.customer_daily_refresh_days) == var.customer_daily_refresh_days
    error_message = "customer_daily_refresh_days must be a whole number from 1 to 30."
  }
}

# --- dashboard -------------------------------------------------------------------------------

variable "dashboard_machine_type" {
  description = "Machine type of the dashboard VM."
  type        = string
  default     = "e2-small"

  validation {
    condition     = can(regex("^[a-z0-9]+-[a-z0-9-]+$", var.dashboard_machine_type))
    error_message = "dashboard_machine_type must be a machine type name such as e2-small."
  }
}

variable "dashboard_password_hash" {
  description = "Hash of the dashboard's login password (as printed by `clickstream dashboard hash-password`); kept in Secret Manager, read by the VM at start. Written only when secret_versions.dashboard_password_hash changes."
  type        = string
  sensitive   = true
  ephemeral   = true

  # The form the dashboard accepts (dashboard/auth.py check_password_hash): scrypt$N$r$p$salt$hash.
  validation {
    condition     = can(regex("^scrypt\\$[0-9]+\\$[0-9]+\\$[0-9]+\\$[A-Za-z0-9+/=_-]+\\$[A-Za-z0-9+/=_-]+$", var.dashboard_password_hash))
    error_message = "dashboard_password_hash must be the scrypt$N$r$p$salt$hash line `clickstream dashboard hash-password` prints."
  }
}

variable "secret_versions" {
  description = "Generation of each secret Terraform writes (write-only: the value is sent to Google only when its number changes). Bump one to write a new value: a new database password of the schema owner (the application user), the processor's or the dashboard's user (generated, or db_password; Cloud SQL and Secret Manager together), the current write_keys, or the current dashboard_password_hash."
  type = object({
    db_password             = optional(number, 1)
    dashboard_db_password   = optional(number, 1)
    processor_db_password   = optional(number, 1)
    write_keys              = optional(number, 1)
    dashboard_password_hash = optional(number, 1)
  })
  default = {}

  validation {
    condition     = alltrue([for v in values(var.secret_versions) : v >= 1 && floor(v) == v])
    error_message = "secret_versions entries must be whole numbers, at least 1."
  }
}

variable "dashboard_members" {
  description = "IAM members (user:, group:) besides admin_email who may open the IAP tunnel to the dashboard."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.dashboard_members : can(regex("^(user|group):[^@\\s]+@[^@\\s]+$", m))])
    error_message = "dashboard_members entries must look like user:name@example.com or group:team@example.com."
  }
}

# --- monitoring and budget ---------------------------------------------------------------------

variable "alert_gateway_5xx_ratio" {
  description = "Alert when this fraction of gateway responses over 5 minutes are 5xx."
  type        = number
  default     = 0.02

  validation {
    condition     = var.alert_gateway_5xx_ratio > 0 && var.alert_gateway_5xx_ratio < 1
    error_message = "alert_gateway_5xx_ratio must be between 0 and 1."
  }
}

variable "alert_gateway_p99_latency_ms" {
  description = "Alert when the gateway's 99th percentile latency over 5 minutes exceeds this many milliseconds."
  type        = number
  default     = 1000

  validation {
    condition     = var.alert_gateway_p99_latency_ms >= 10
    error_message = "alert_gateway_p99_latency_ms must be at least 10."
  }
}

variable "alert_oldest_unacked_seconds" {
  description = "Alert when the processor's oldest unacknowledged message is older than this."
  type        = number
  default     = 600

  validation {
    condition     = var.alert_oldest_unacked_seconds >= 60
    error_message = "alert_oldest_unacked_seconds must be at least 60."
  }
}

variable "billing_account" {
  description = "Billing account ID (XXXXXX-XXXXXX-XXXXXX) for the optional budget; null creates no budget."
  type        = string
  default     = null

  validation {
    condition     = var.billing_account == null || can(regex("^[A-F0-9]{6}-[A-F0-9]{6}-[A-F0-9]{6}$", coalesce(var.billing_account, "x")))
    error_message = "billing_account must look like 012345-6789AB-CDEF01."
  }
}

variable "monthly_budget" {
  description = "Monthly budget amount (in the billing account's currency) for the optional budget alert at 50%, 90% and 100%."
  type        = number
  default     = 300

  validation {
    condition     = var.monthly_budget > 0
    error_message = "monthly_budget must be positive."
  }
}
