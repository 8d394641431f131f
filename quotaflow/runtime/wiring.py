"""The one place that opens what each step's handler needs, from `Settings`: PostgreSQL,
Redis, Kafka and the model behind the ports of `functions/<step>/handler.py`.

`wire(step, settings)` answers the step's ports bundle and its `Resources` (readiness, close);
the Kafka worker, the HTTP entry and the Knative entry all start a step through it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from functions.estimate.handler import EstimatePorts
from functions.infer.handler import InferPorts
from functions.record.handler import RecordPorts
from functions.reserve.handler import ReservePorts
from functions.settle.handler import SettlePorts
from quotaflow.adapters import kafka
from quotaflow.adapters.postgres import Reconnecting
from quotaflow.adapters.postgres_clock import PostgresClock
from quotaflow.adapters.redis_stream import RedisTokenStream
from quotaflow.adapters.request_store import PostgresRequestStore
from quotaflow.ledger.outbox import LedgerRelay
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime.reconcile import Reconciler
from quotaflow.runtime.step import Resources
from quotaflow.settings import Settings


class Connection(Protocol):
    """A PostgreSQL connection, or a `Reconnecting` holder (closed while it cannot reopen)."""

    @property
    def closed(self) -> bool: ...


@dataclass(frozen=True)
class Held:
    """What a step holds open: ready while none of its PostgreSQL connections is closed;
    `close` runs the closers in order."""

    connections: Sequence[Connection] = ()
    closers: Sequence[Callable[[], None]] = field(default=())

    def ready(self) -> bool:
        return not any(conn.closed for conn in self.connections)

    def close(self) -> None:
        for close in self.closers:
            close()


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


def _projection(settings: Settings) -> RedisProjection:
    return RedisProjection.connect(settings.redis_url, settings.redis_timeout_ms)


def wire_reserve(settings: Settings) -> Wired:
    ledger_db, requests_db = _postgres(settings), _postgres(settings)
    ledger, requests = PostgresLedger(ledger_db), PostgresRequestStore(requests_db)
    ports = ReservePorts(ledger, _projection(settings), requests)
    return Wired(ports, Held((ledger_db, requests_db), (ledger.close, requests.close)))


def wire_infer(settings: Settings) -> Wired:
    from quotaflow.model.loader import load_generator  # loads ONNX Runtime: only when needed

    # Token deltas and cancellations travel through Redis (see quotaflow.adapters.redis_stream).
    stream = RedisTokenStream.connect(settings.redis_url, settings.redis_timeout_ms)
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
    ports = SettlePorts(ledger, _projection(settings), relay,
                        settings.reservation_ttl_s, reconciler)
    return Wired(ports, Held((ledger_db, requests_db),
                             (relay.close, ledger.close, requests.close)))


def wire_record(settings: Settings) -> Wired:
    requests_db = _postgres(settings)
    requests = PostgresRequestStore(requests_db)
    return Wired(RecordPorts(requests), Held((requests_db,), (requests.close,)))


WIRING: dict[str, Callable[[Settings], Wired]] = {
    "estimate": wire_estimate, "reserve": wire_reserve, "infer": wire_infer,
    "settle": wire_settle, "record": wire_record}


def wire(step: str, settings: Settings) -> Wired:
    """Open the ports of consumer step `step` (see `quotaflow.runtime.steps.CONSUMER_STEPS`)."""
    if step not in WIRING:
        raise KeyError(f"no wiring for step {step!r}; steps are {', '.join(WIRING)}")
    return WIRING[step](settings)
