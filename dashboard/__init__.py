"""The BI dashboard over the processor's PostgreSQL tables."""
