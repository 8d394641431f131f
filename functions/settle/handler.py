"""settle: end each reservation exactly once. `completed` charges the real tokens and returns
the rest; `failed` releases it all. Periodically (a timer locally, a PingSource on Knative) it
expires reservations older than the TTL and publishes committed ledger events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from events.envelope import Event
from quotaflow.adapters import kafka
from quotaflow.adapters import request_store as requests
from quotaflow.ledger.commands import EndCommand, Outcome, ReleaseReservation, SettleReservation
from quotaflow.ledger.outbox import LedgerRelay
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime import metrics
from quotaflow.runtime.bootstrap import open_ledger
from quotaflow.runtime.emit import emit
from quotaflow.runtime.step import Step
from quotaflow.settings import Settings


@dataclass
class SettlePorts:
    ledger: PostgresLedger
    projection: RedisProjection
    relay: LedgerRelay
    reservation_ttl_s: int

    def ready(self) -> bool:
        return not self.ledger.conn.closed

    def close(self) -> None:
        self.relay.close()
        self.ledger.close()


def make_ports(settings: Settings) -> SettlePorts:
    ledger, projection = open_ledger(settings)
    producer: Producer = kafka.make_producer(settings)
    relay = LedgerRelay(PostgresLedger.connect(settings.postgres_url), producer,
                        settings.topic("ledger"))
    return SettlePorts(ledger, projection, relay, settings.reservation_ttl_s)


def _command(ev: Event) -> EndCommand:
    d = ev.data
    digest = requests.payload_hash(dict(d))
    if ev.type.name == "completed":
        return SettleReservation(ev.tenant, str(d["request_id"]),
                                 int(d["prompt_tokens"]) + int(d["completion_tokens"]), digest)
    return ReleaseReservation(ev.tenant, str(d["request_id"]), str(d["reason"]), digest)


def _settled(o: Outcome, d: dict[str, Any]) -> Event:
    status = {"ReservationSettled": "completed", "ReservationReleased": "failed",
              "ReservationExpired": "expired"}.get(o.kind or "")
    if status is None:  # refused: a late settlement after expiry, or a conflicting redelivery
        status = "expired" if o.reason == "reservation_expired" else "failed"
    charged = o.amount if o.kind == "ReservationSettled" else 0
    return emit("settled", "settle", {
        "request_id": o.request_id, "tenant": o.tenant, "status": status,
        "reserved_tokens": o.reserved or int(d.get("reserved_tokens", 0)),
        "charged_tokens": charged, "released_tokens": o.released if charged else o.amount,
        "prompt_tokens": int(d.get("prompt_tokens", 0)),
        "completion_tokens": int(d.get("completion_tokens", 0)),
        "text": d.get("text"), "model": str(d.get("model", "")),
        "model_version": str(d.get("model_version", "")),
        "reason": o.reason or d.get("reason"), "ledger_seq": o.seq})


def handle(events: Sequence[Event], ports: SettlePorts) -> list[Event]:
    outcomes = ports.ledger.end([_command(ev) for ev in events])
    ports.projection.catch_up(ports.ledger)
    for o in outcomes:
        metrics.LEDGER_DECISIONS.labels(o.kind or "refused").inc()
    return [_settled(o, dict(ev.data)) for ev, o in zip(events, outcomes, strict=True)]


def sweep(ports: SettlePorts) -> list[Event]:
    """Expire stale reservations and publish committed ledger events to the ledger topic."""
    expired = ports.ledger.expire_stale(ports.reservation_ttl_s)
    ports.projection.catch_up(ports.ledger)
    ports.relay.publish_pending()
    return [_settled(o, {}) for o in expired]


STEP = Step(name="settle", consumes=("completed", "failed"), produces=("settled",),
            handle=handle, make_ports=make_ports, tick=sweep,
            tick_interval_s=lambda s: float(s.sweep_interval_s), batch_max=lambda s: 256)
