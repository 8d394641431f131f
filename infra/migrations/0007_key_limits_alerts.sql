-- Per-key limits the door enforces on Redis (quotaflow/runtime/door/limits.py): tokens
-- reserved in a rolling minute and requests in flight. 0 is unlimited.
ALTER TABLE api_keys
    ADD COLUMN tpm          integer NOT NULL DEFAULT 0 CHECK (tpm >= 0),
    ADD COLUMN max_inflight integer NOT NULL DEFAULT 0 CHECK (max_inflight >= 0);

-- Threshold alerts (quotaflow/alerts): `quotaflow alerts run` follows the ledger topic with a
-- consumer group of its own and keeps everything here, in one transaction per batch: the next
-- offsets, the last stream version applied per tenant, each level's spent and limit per
-- period and unit, and the deliveries the batch made due. A delivery's id is its webhook-id,
-- derived from (alert, level, period, unit, threshold), so a replay of the topic, a restart or
-- a redelivered batch makes no second delivery of a crossing.
CREATE TABLE budget_alerts (
    alert_id          bigserial PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES tenants,
    scope             text NOT NULL CHECK (scope IN ('tenant', 'team', 'key')),
    scope_id          text NOT NULL,
    threshold_percent integer NOT NULL CHECK (threshold_percent BETWEEN 1 AND 100),
    url               text NOT NULL,
    secret            text NOT NULL,  -- whsec_<base64>: the HMAC key signing its deliveries
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX budget_alerts_tenant ON budget_alerts (tenant_id);

CREATE TABLE alert_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);

CREATE TABLE alert_streams (
    tenant_id      text PRIMARY KEY,
    stream_version bigint NOT NULL
);

CREATE TABLE alert_levels (
    tenant_id   text NOT NULL,
    scope       text NOT NULL,
    scope_id    text NOT NULL,
    period      text NOT NULL,
    unit        text NOT NULL CHECK (unit IN ('tokens', 'usd')),
    spent       bigint NOT NULL DEFAULT 0,
    limit_value bigint NOT NULL DEFAULT 0,  -- 0: no limit in this period
    PRIMARY KEY (tenant_id, scope, scope_id, period, unit)
);

CREATE TABLE alert_deliveries (
    webhook_id      text PRIMARY KEY,
    alert_id        bigint NOT NULL REFERENCES budget_alerts ON DELETE CASCADE,
    body            text NOT NULL,  -- the CloudEvent as sent, byte for byte on every retry
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL;
