"""Cloud Functions (gen2) entry point: the processor's CloudEvent handler, at the archive root.

The archive Terraform builds holds this file, requirements.txt, and the repository's
`processor/` and `clickstream/` packages beside it (see ../processor.tf).
"""

from processor.function import process_pubsub

__all__ = ["process_pubsub"]
