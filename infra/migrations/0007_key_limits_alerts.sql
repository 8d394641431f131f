-- Per-key limits the door enforces on Redis (quotaflow/runtime/door/limits.py): tokens
-- reserved in a rolling minute and requests in flight. 0 is unlimited.
ALTER TABLE api_keys
    ADD COLUMN tpm          integer NOT NULL DEFAULT 0 CHECK (tpm >= 0),
    ADD COLUMN max_inflight integer NOT NULL DEFAULT 0 CHECK (max_inflight >= 0);
