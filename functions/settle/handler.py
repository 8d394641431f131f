"""settle: end each reservation exactly once. `completed` charges the real tokens and returns
the rest; `failed` releases it all. Periodically (a timer locally, a PingSource on Knative) it
expires reservations older than the TTL and publishes committed ledger events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.payloads import Completed, Failed, Settled, to_record
from quotaflow.ports import (
    EndCommand,
    Ledger,
    LedgerOutbox,
    Outcome,
    Projection,
    ReleaseReservation,
    SettleReservation,
    payload_hash,
)
from quotaflow.runtime import metrics
from quotaflow.runtime.step import Step

STATUS = {"ReservationSettled": "completed", "ReservationReleased": "failed",
          "ReservationExpired": "expired"}


@dataclass(frozen=True)
class SettlePorts:
    ledger: Ledger
    projection: Projection
    outbox: LedgerOutbox
    reservation_ttl_s: int


def command(p: Completed | Failed) -> EndCommand:
    """Completed charges prompt + completion tokens; Failed releases the whole reservation."""
    digest = payload_hash(to_record(p))
    if isinstance(p, Completed):
        return SettleReservation(p.tenant, p.request_id, p.prompt_tokens + p.completion_tokens,
                                 digest)
    return ReleaseReservation(p.tenant, p.request_id, p.reason, digest)


def settled(o: Outcome, p: Completed | Failed | None) -> Settled:
    """What record needs of a reservation's end (`p` is None for an expiry)."""
    # Refused: a late settlement after expiry, or a conflicting redelivery.
    status = STATUS.get(o.kind or "") or (
        "expired" if o.reason == "reservation_expired" else "failed")
    charged = o.amount if o.kind == "ReservationSettled" else 0
    done = p if isinstance(p, Completed) else None
    return Settled(
        request_id=o.request_id, tenant=o.tenant, status=status,
        reserved_tokens=o.reserved or (p.reserved_tokens if p else 0), charged_tokens=charged,
        released_tokens=o.released if o.kind == "ReservationSettled" else o.amount,
        prompt_tokens=done.prompt_tokens if done else 0,
        completion_tokens=done.completion_tokens if done else 0,
        text=done.text if done else None, model=done.model if done else "",
        model_version=done.model_version if done else "",
        reason=o.reason or (p.reason if isinstance(p, Failed) else None), ledger_seq=o.seq)


def handle(payloads: Sequence[Completed | Failed], ports: SettlePorts) -> list[Settled]:
    """End the batch's reservations in one ledger call; one output per input, in order."""
    outcomes = ports.ledger.end([command(p) for p in payloads])
    ports.projection.catch_up(ports.ledger)
    for o in outcomes:
        metrics.LEDGER_DECISIONS.labels(o.kind or "refused").inc()
    return [settled(o, p) for p, o in zip(payloads, outcomes, strict=True)]


def sweep(ports: SettlePorts) -> list[Settled]:
    """Expire stale reservations and publish committed ledger events to the ledger topic."""
    expired = ports.ledger.expire_stale(ports.reservation_ttl_s)
    ports.projection.catch_up(ports.ledger)
    ports.outbox.publish_pending()
    return [settled(o, None) for o in expired]


STEP = Step(name="settle", consumes=("completed", "failed"), produces=("settled",),
            handle=handle, tick=sweep, tick_interval_s=lambda s: float(s.sweep_interval_s),
            batch_max=lambda s: 256)
