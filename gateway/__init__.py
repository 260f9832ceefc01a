"""The ingestion gateway: validate events at the edge and publish them durably to Pub/Sub."""
