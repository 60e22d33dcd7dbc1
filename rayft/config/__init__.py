"""The whole config: the Pipeline schema (built from the registered stages), the one loader, the
generated docs."""
