"""The one place that opens what each step's handler needs, from `Settings`: PostgreSQL,
Redis, Kafka and the model behind the ports of `functions/<step>/handler.py`.

`wire(step, settings)` answers the step's ports bundle and its `Resources` (readiness, close);
the Kafka worker, the HTTP entry and the Knative entry all start a step through it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from functions.estimate.handler import EstimatePorts
from functions.infer.handler import InferPorts
from functions.record.handler import RecordPorts
from functions.reserve.handler import ReservePorts
from functions.settle.handler import SettlePorts
from quotaflow.adapters import kafka
from quotaflow.adapters.request_store import PostgresRequestStore
from quotaflow.ledger.outbox import LedgerRelay
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime.step import Resources
from quotaflow.settings import Settings


@dataclass(frozen=True)
class Held:
    """What a step holds open: ready while none of its PostgreSQL connections is closed;
    `close` runs the closers in order."""

    connections: Sequence[psycopg.Connection[Any]] = ()
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


def wire_reserve(settings: Settings) -> Wired:
    ledger = PostgresLedger.connect(settings.postgres_url)
    requests = PostgresRequestStore.connect(settings.postgres_url)
    ports = ReservePorts(ledger, RedisProjection.connect(settings.redis_url), requests)
    return Wired(ports, Held((ledger.conn, requests.conn), (ledger.close, requests.close)))


def wire_infer(settings: Settings) -> Wired:
    from quotaflow.model.loader import load_generator  # loads ONNX Runtime: only when needed

    return Wired(InferPorts(load_generator(settings)), Held())


def wire_settle(settings: Settings) -> Wired:
    ledger = PostgresLedger.connect(settings.postgres_url)
    # The relay holds its own connection: its cursor transaction must not wrap the decisions.
    relay = LedgerRelay(PostgresLedger.connect(settings.postgres_url),
                        kafka.make_producer(settings), settings.topic("ledger"))
    ports = SettlePorts(ledger, RedisProjection.connect(settings.redis_url), relay,
                        settings.reservation_ttl_s)
    return Wired(ports, Held((ledger.conn,), (relay.close, ledger.close)))


def wire_record(settings: Settings) -> Wired:
    requests = PostgresRequestStore.connect(settings.postgres_url)
    return Wired(RecordPorts(requests), Held((requests.conn,), (requests.close,)))


WIRING: dict[str, Callable[[Settings], Wired]] = {
    "estimate": wire_estimate, "reserve": wire_reserve, "infer": wire_infer,
    "settle": wire_settle, "record": wire_record}


def wire(step: str, settings: Settings) -> Wired:
    """Open the ports of consumer step `step` (see `quotaflow.runtime.steps.CONSUMER_STEPS`)."""
    if step not in WIRING:
        raise KeyError(f"no wiring for step {step!r}; steps are {', '.join(WIRING)}")
    return WIRING[step](settings)
