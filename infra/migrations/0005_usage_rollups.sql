-- Usage roll-ups for analytics, kept by `quotaflow analytics run` from the ledger, completed
-- and failed topics: one row per tenant, model, API key and minute. Exactly once: the
-- consumer's offsets, the last ledger stream version applied per tenant and the request
-- outcomes applied are written in the same transaction as the roll-ups they produced, so a
-- redelivered record, a restart or a replay of a topic from its start never counts twice.

CREATE TABLE usage_rollups (
    tenant_id         text NOT NULL,
    minute            timestamptz NOT NULL,
    model             text NOT NULL,  -- '' for tenant-level entries (grants) and unknown requests
    key_id            text NOT NULL,  -- the API key the request was admitted with, or ''
    requests          bigint NOT NULL DEFAULT 0,  -- decided by the ledger: reserved or rejected
    rejected          bigint NOT NULL DEFAULT 0,
    completed         bigint NOT NULL DEFAULT 0,  -- inference completed (the completed topic)
    failed            bigint NOT NULL DEFAULT 0,  -- inference failed (the failed topic)
    expired           bigint NOT NULL DEFAULT 0,
    granted_tokens    bigint NOT NULL DEFAULT 0,
    reserved_tokens   bigint NOT NULL DEFAULT 0,
    charged_tokens    bigint NOT NULL DEFAULT 0,
    released_tokens   bigint NOT NULL DEFAULT 0,
    expired_tokens    bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    latency_ms        double precision NOT NULL DEFAULT 0,  -- summed over `completed`
    PRIMARY KEY (tenant_id, minute, model, key_id)
);

-- Where each consumer group goes on from, per topic partition: the next offset to read.
CREATE TABLE usage_offsets (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);

-- The last ledger stream version rolled up per tenant. The relay publishes at least once, in
-- sequence order, keyed by tenant: a version not above this one is a duplicate.
CREATE TABLE usage_streams (
    tenant_id text PRIMARY KEY,
    version   bigint NOT NULL
);

-- Request outcomes already rolled up: a re-published completed or failed event is skipped.
CREATE TABLE usage_outcomes (
    request_id  text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('completed', 'failed')),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, kind)
);
