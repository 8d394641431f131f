"""The quota ledger: pure rules (domain), the PostgreSQL event store (store) and the Redis
projection (projection)."""
