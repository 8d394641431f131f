-- A key's own request rate limit per minute, in place of its tenant's (`quotaflow key create
-- --rate-limit R`). NULL: the tenant's `rate_limit_per_min` applies, as for every key made
-- before this column existed.
ALTER TABLE api_keys
    ADD COLUMN rate_limit_per_min integer CHECK (rate_limit_per_min > 0);
