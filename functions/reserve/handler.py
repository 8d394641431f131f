"""reserve: the authoritative quota check. The whole polled batch is decided in one ledger
transaction; each request gets TokensReserved (-> `reserved`) or RequestRejected
(-> `rejected`). A redelivered request gets its first outcome again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from events.envelope import Event
from quotaflow.adapters import request_store as requests
from quotaflow.ledger.commands import ReserveTokens
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime import metrics
from quotaflow.runtime.bootstrap import open_ledger, open_postgres
from quotaflow.runtime.emit import emit, request_part, unprocessable
from quotaflow.runtime.step import Step
from quotaflow.settings import Settings


@dataclass
class ReservePorts:
    ledger: PostgresLedger
    projection: RedisProjection
    db: psycopg.Connection[Any]

    def ready(self) -> bool:
        return not self.db.closed

    def close(self) -> None:
        self.ledger.close()
        self.db.close()


def make_ports(settings: Settings) -> ReservePorts:
    ledger, projection = open_ledger(settings)
    return ReservePorts(ledger, projection, open_postgres(settings))


def handle(events: Sequence[Event], ports: ReservePorts) -> list[Event]:
    commands = [ReserveTokens(tenant=ev.tenant, request_id=str(ev.data["request_id"]),
                              amount=int(ev.data["estimate_tokens"]),
                              payload_hash=requests.payload_hash(dict(ev.data)))
                for ev in events]
    outcomes = ports.ledger.reserve(commands)
    ports.projection.catch_up(ports.ledger)
    out = []
    for ev, o in zip(events, outcomes, strict=True):
        metrics.LEDGER_DECISIONS.labels(o.kind or "refused").inc()
        if o.accepted:
            requests.mark(ports.db, o.request_id, "reserved", only_from=("queued",),
                          reserved_tokens=o.amount, prompt_tokens=int(ev.data["prompt_tokens"]))
            out.append(emit("reserved", "reserve", {
                **request_part(ev.data), "prompt_tokens": ev.data["prompt_tokens"],
                "reserved_tokens": o.amount, "period": o.period, "ledger_seq": o.seq}))
        else:
            out.append(emit("rejected", "reserve", {
                "request_id": o.request_id, "tenant": o.tenant,
                "requested_tokens": int(ev.data["estimate_tokens"]),
                "reason": o.reason or "rejected", "period": o.period, "ledger_seq": o.seq}))
    return out


def on_poison(ev: Event, reason: str, ports: ReservePorts) -> list[Event]:
    return unprocessable("reserve", ev, reason)


STEP = Step(name="reserve", consumes=("estimated",), produces=("reserved", "rejected"),
            handle=handle, make_ports=make_ports, on_poison=on_poison, batch_max=lambda s: 256)
