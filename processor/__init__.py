"""The stream processor: enrich events and write them to PostgreSQL and BigQuery."""
