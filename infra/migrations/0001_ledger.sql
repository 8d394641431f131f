-- quotaflow schema v1: tenants and keys, the append-only ledger, its decision snapshot,
-- reservations, idempotency records, the request read model and the outbox cursor.

CREATE TABLE tenants (
    tenant_id          text PRIMARY KEY,
    plan_period        text NOT NULL CHECK (plan_period IN ('day', 'month')),
    grant_tokens       bigint NOT NULL CHECK (grant_tokens >= 0),
    rate_limit_per_min integer NOT NULL CHECK (rate_limit_per_min > 0),
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants,
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Per-tenant stream versions: appends lock the row, and UNIQUE (tenant_id, stream_version)
-- on the ledger is the optimistic guard behind it.
CREATE TABLE ledger_streams (
    tenant_id text PRIMARY KEY REFERENCES tenants,
    version   bigint NOT NULL DEFAULT 0
);

CREATE TABLE ledger_events (
    seq            bigserial PRIMARY KEY,
    tenant_id      text NOT NULL,
    stream_version bigint NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('QuotaGranted', 'TokensReserved',
                       'ReservationSettled', 'ReservationReleased', 'ReservationExpired',
                       'RequestRejected')),
    request_id     text,
    period         text NOT NULL,
    amount         bigint NOT NULL,
    released       bigint NOT NULL DEFAULT 0,
    reason         text,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, stream_version)
);
CREATE INDEX ledger_events_request ON ledger_events (request_id);

-- Every reservation ends exactly once: the row's state moves from open to one ending.
CREATE TABLE reservations (
    request_id  text PRIMARY KEY,
    tenant_id   text NOT NULL,
    period      text NOT NULL,
    amount      bigint NOT NULL,
    reserved_at timestamptz NOT NULL,
    ended       text CHECK (ended IN ('ReservationSettled', 'ReservationReleased',
                    'ReservationExpired'))
);
CREATE INDEX reservations_open ON reservations (reserved_at) WHERE ended IS NULL;

-- Balances as the ledger leaves them: a snapshot for decisions, kept in the append's
-- transaction. The audit replays ledger_events and compares.
CREATE TABLE balances (
    tenant_id text NOT NULL,
    period    text NOT NULL,
    granted   bigint NOT NULL DEFAULT 0,
    reserved  bigint NOT NULL DEFAULT 0,
    spent     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, period)
);

-- Idempotency by request id, written in the same transaction as the ledger append.
CREATE TABLE ledger_commands (
    request_id   text NOT NULL,
    command      text NOT NULL,
    payload_hash text NOT NULL,
    outcome      jsonb NOT NULL,
    PRIMARY KEY (request_id, command)
);

-- The read model clients poll.
CREATE TABLE requests (
    request_id        text PRIMARY KEY,
    tenant_id         text NOT NULL,
    key_id            text NOT NULL,
    source            text NOT NULL,
    ce_id             text NOT NULL,
    payload_hash      text NOT NULL,
    status            text NOT NULL,
    model             text NOT NULL,
    model_version     text,
    prompt_tokens     integer,
    completion_tokens integer,
    reserved_tokens   bigint,
    charged_tokens    bigint,
    output            text,
    reason            text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX requests_tenant ON requests (tenant_id, created_at);

CREATE TABLE outbox_cursors (
    name text PRIMARY KEY,
    seq  bigint NOT NULL DEFAULT 0
);
INSERT INTO outbox_cursors (name) VALUES ('ledger-topic');
