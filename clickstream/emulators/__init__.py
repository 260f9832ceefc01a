"""Local stand-ins for Google Cloud services, started by `clickstream emulator ...`."""
