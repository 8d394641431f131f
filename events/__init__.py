"""quotaflow's shared runtime: event catalog, Avro codec, CloudEvents bindings, Kafka loop,
ledger, projection, settings and CLI. The six functions in `functions/` are built on it."""

__version__ = "0.1.0"
