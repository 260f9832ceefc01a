"""What every part of clickstream shares, and nothing else: the event contract (`event`), the
Pub/Sub envelope (`envelope`), the gateway's answers (`answers`), configuration (`config`), the
services' garbage-collector setting (`gc_tuning`) and the `clickstream` command's registry
(`cli`). It imports only msgspec and the standard library."""
