"""Cloud Functions (gen2) entry point: the processor's CloudEvent handler, at the archive root.

The archive Terraform builds (../storage.tf, `processor_files`) holds this file,
requirements.txt (what the function's build installs: the processor's and the contract's
dependencies) with requirements.lock (which pins them and theirs), and the sources of the processor
(`processor/`) and of the contract it imports (`clickstream_contract/`) beside it; nothing
else of the repository. See ../processor.tf.
"""

from processor.function import process_pubsub

__all__ = ["process_pubsub"]
