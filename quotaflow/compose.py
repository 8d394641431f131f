"""The composition root: the one place that opens real adapters from `Settings`.

Every process starts here. A consumer step gets its ports bundle from `wire(step, settings)`
(the Kafka worker, the HTTP entry and the Knative entry all start a step through it); admit's
HTTP door gets `DoorPorts` from `connect_door(settings)`; the command line and the chaos
harness open PostgreSQL, the ledger, the projection and the usage roll-ups through the
functions at the end. The unit tests build the same bundles over in-memory fakes in
`tests/unit/fakes.py`.

What stays outside: the Kafka consumer and producer a step runs on are the runtime's transport,
not the step's ports, and the worker renews its producer after a fatal error, so the worker
and the HTTP entry make them (`quotaflow.adapters.kafka`); the model loader picks the model
(`quotaflow.model.loader`); the chaos harness's observers hold connections of their own,
named so that the faults it injects spare them (`quotaflow.chaos.observe`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import psycopg
import redis

from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.adapters.budget_store import PostgresLevels
from quotaflow.adapters.kafka import KafkaPublisher
from quotaflow.adapters.postgres import Reconnecting
from quotaflow.adapters.postgres_clock import PostgresClock
from quotaflow.adapters.redis_client import RedisClient, RedisMode, connect_redis
from quotaflow.adapters.redis_gate import GroupScreenGate, RedisAdmissionGate
from quotaflow.adapters.redis_stream import RedisTokenStream
from quotaflow.adapters.request_store import GroupCommitRequestStore, PostgresRequestStore
from quotaflow.adapters.thread_connections import ThreadConnections, ThreadTenants
from quotaflow.analytics.store import PostgresUsageStore
from quotaflow.functions.estimate.handler import EstimatePorts
from quotaflow.functions.infer.handler import InferPorts
from quotaflow.functions.record.handler import RecordPorts
from quotaflow.functions.reserve.handler import ReservePorts
from quotaflow.functions.settle.handler import SettlePorts
from quotaflow.ledger.outbox import LedgerRelay
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime.door.ports import DoorPorts
from quotaflow.runtime.reconcile import Reconciler
from quotaflow.runtime.step import Held, Resources
from quotaflow.settings import Settings

if TYPE_CHECKING:
    from quotaflow.model.registry import ModelRegistry

# -- the pipeline steps -------------------------------------------------------------------


@dataclass(frozen=True)
class Wired:
    """A step's ports bundle and what it holds open."""

    ports: Any
    resources: Resources


def wire_estimate(settings: Settings) -> Wired:
    from quotaflow.model.loader import load_tokenizer  # loads ONNX Runtime: only when needed

    return Wired(EstimatePorts(load_tokenizer(settings)), Held())


def _postgres(settings: Settings) -> Reconnecting:
    # Opened on first use and reopened after it is lost (a failover, pg_terminate_backend),
    # with the connect and statement timeouts of `settings`.
    return Reconnecting.from_settings(settings)


def redis_client(settings: Settings) -> RedisClient:
    """A Redis client (a cluster client when `QF_REDIS_MODE=cluster`), with `settings`' Redis
    timeout; TLS, password and CA come in `REDIS_URL` (`quotaflow.adapters.redis_client`)."""
    return connect_redis(settings.redis_url, settings.redis_timeout_ms,
                         cast(RedisMode, settings.redis_mode))


def projection(settings: Settings) -> RedisProjection:
    """The Redis projection of balances, with `settings`' Redis timeout."""
    return RedisProjection(redis_client(settings))


def wire_reserve(settings: Settings) -> Wired:
    ledger_db, requests_db = _postgres(settings), _postgres(settings)
    ledger, requests = PostgresLedger(ledger_db), PostgresRequestStore(requests_db)
    window = key_limits(settings)
    ports = ReservePorts(ledger, projection(settings), requests, window)
    return Wired(ports, Held((ledger_db, requests_db),
                             (ledger.close, requests.close, window.redis.close)))


def wire_infer(settings: Settings) -> Wired:
    from quotaflow.model.loader import load_generator  # loads ONNX Runtime: only when needed

    # Token deltas and cancellations travel through Redis (see quotaflow.adapters.redis_stream).
    stream = RedisTokenStream(redis_client(settings))
    return Wired(InferPorts(load_generator(settings), stream), Held((), (stream.redis.close,)))


def wire_settle(settings: Settings) -> Wired:
    ledger_db, requests_db = _postgres(settings), _postgres(settings)
    ledger = PostgresLedger(ledger_db)
    # The relay holds its own connection: its cursor transaction must not wrap the decisions.
    relay = LedgerRelay(PostgresLedger(_postgres(settings)),
                        kafka.make_producer(settings), settings.topic("ledger"))
    # The reconciler reads and ends request records by the ledger's clock (PostgreSQL's).
    requests = PostgresRequestStore(requests_db)
    reconciler = Reconciler(requests, PostgresClock(requests_db),
                            settings.redrive_after_s, settings.request_deadline_s)
    slots = key_limits(settings)
    ports = SettlePorts(ledger, projection(settings), relay,
                        settings.reservation_ttl_s, reconciler, slots)
    return Wired(ports, Held((ledger_db, requests_db),
                             (relay.close, ledger.close, requests.close, slots.redis.close)))


def key_limits(settings: Settings) -> RedisAdmissionGate:
    """The gate, for the steps that trim the keys' rolling minutes (reserve) and free ended
    requests' in-flight slots (settle, record)."""
    return RedisAdmissionGate(redis_client(settings), settings.inflight_slot_ttl_s)


def wire_record(settings: Settings) -> Wired:
    requests_db = _postgres(settings)
    requests = PostgresRequestStore(requests_db)
    slots = key_limits(settings)
    return Wired(RecordPorts(requests, slots),
                 Held((requests_db,), (requests.close, slots.redis.close)))


WIRING: dict[str, Callable[[Settings], Wired]] = {
    "estimate": wire_estimate, "reserve": wire_reserve, "infer": wire_infer,
    "settle": wire_settle, "record": wire_record}


def wire(step: str, settings: Settings) -> Wired:
    """Open the ports of consumer step `step` (see `quotaflow.runtime.steps.CONSUMER_STEPS`)."""
    if step not in WIRING:
        raise KeyError(f"no wiring for step {step!r}; steps are {', '.join(WIRING)}")
    return WIRING[step](settings)


# -- admit's HTTP door --------------------------------------------------------------------


@dataclass(frozen=True)
class DoorHeld:
    """What the door holds open: ready while PostgreSQL and Redis answer."""

    connections: ThreadConnections
    redis: RedisClient
    publisher: KafkaPublisher

    def ready(self) -> bool:
        try:
            self.connections.get().execute("SELECT 1")
            return bool(self.redis.ping())
        except (psycopg.Error, redis.RedisError):
            return False

    def close(self) -> None:
        self.publisher.close(5)
        self.connections.close()
        self.redis.close()


def connect_door(settings: Settings) -> DoorPorts:
    """The door's real ports: PostgreSQL (tenants, requests, usage roll-ups, the ledger's
    clock) on one connection per server thread; Redis (rate limit, pre-check, balances, token
    streams) and Kafka (the `admitted` topic), whose clients are thread-safe and shared."""
    connections = ThreadConnections(settings.postgres_url, settings.db_connect_timeout_s,
                                    settings.db_statement_timeout_ms)
    client = redis_client(settings)
    # A broker that does not confirm within a leader's failover is a 503 the client can retry,
    # before a client's own timeout (Settings.kafka_publish_timeout_ms says why 8 s).
    publisher = KafkaPublisher.from_settings(settings,
                                             timeout_s=settings.kafka_publish_timeout_ms / 1000)
    return DoorPorts(
        tenants=ThreadTenants(connections), gate=GroupScreenGate(
            RedisAdmissionGate(client, settings.inflight_slot_ttl_s)),
        balances=RedisProjection(client),
        requests=GroupCommitRequestStore(PostgresRequestStore(connections.get)),
        publisher=publisher, clock=PostgresClock(connections.get),
        resources=DoorHeld(connections, client, publisher), stream=RedisTokenStream(client),
        usage=PostgresUsageStore(connections.get), ledger=PostgresLedger(connections.get),
        levels=PostgresLevels(connections.get))


# -- the command line and the chaos harness -----------------------------------------------


def postgres(settings: Settings, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A PostgreSQL connection with `settings`' connect timeout (no statement timeout: an
    audit reads the whole ledger); use it in a `with` block."""
    return db.connect(settings.postgres_url, autocommit, settings.db_connect_timeout_s)


def migrate(settings: Settings) -> list[str]:
    """Apply the migrations not yet applied; the names applied."""
    return db.migrate(settings.postgres_url)


def ledger(settings: Settings) -> PostgresLedger:
    """The ledger on a connection of its own, reopened when lost (no statement timeout: a
    projection rebuild reads it whole)."""
    return PostgresLedger(Reconnecting(settings.postgres_url, True,
                                       settings.db_connect_timeout_s))


def model_registry(settings: Settings) -> ModelRegistry:
    """The S3 model registry (infer's model loader opens its own, `quotaflow.model.loader`)."""
    from quotaflow.model.registry import ModelRegistry  # boto3: only when needed

    return ModelRegistry.connect(settings.s3_endpoint_url, settings.model_bucket)


def usage_store(settings: Settings, statement_timeout: bool = False) -> PostgresUsageStore:
    """The usage roll-ups on a connection of their own, reopened when lost; with
    `settings`' statement timeout when `statement_timeout` (the long-running consumer)."""
    conn = _postgres(settings) if statement_timeout else Reconnecting(
        settings.postgres_url, True, settings.db_connect_timeout_s)
    return PostgresUsageStore(conn)
