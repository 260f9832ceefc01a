"""clickstream: the shared event contract, configuration and the `clickstream` command line."""
