"""`quotaflow bench`: admit against a bare CloudEvents endpoint, and the whole pipeline with the
stand-in model, on a local stack of the bench's own (loopback only, bounded in time)."""
