"""quotaflow's runtime: the ledger, the model, the step runtime (Kafka worker, HTTP and Knative
entries), adapters for PostgreSQL, Redis, Kafka and S3 with in-memory fakes, the admit door,
the CLI and the local stack. The six steps themselves are in `functions/`; the wire in
`events/`."""

__version__ = "0.1.0"
