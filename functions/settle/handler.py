"""settle: end each reservation exactly once. `completed` charges the real tokens and returns
the rest; `failed` releases it all. Periodically (a timer locally, a PingSource on Knative) it
expires reservations older than the TTL, runs the reconciler (re-drives requests that stopped
moving, ends those past their deadline) and publishes committed ledger events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quotaflow.events.payloads import Admitted, Completed, Failed, Reserved, Settled
from quotaflow.events.status import LedgerKind, LedgerReason, RequestStatus, SettlementStatus
from quotaflow.ports import (
    EndCommand,
    FinalRecord,
    InflightSlots,
    Ledger,
    LedgerOutbox,
    OpenRequest,
    Outcome,
    Projection,
    ReleaseReservation,
    ReserveTokens,
    SettleReservation,
)
from quotaflow.runtime import metrics
from quotaflow.runtime.idempotency import end_digest
from quotaflow.runtime.reconcile import Reconciler, reconcile
from quotaflow.runtime.slots import release_slots
from quotaflow.runtime.step import Step

# The digest of the reservation refused when a request's deadline closes it: no real
# reservation command has it, so any later one is a conflict and reserves nothing.
DEADLINE_DIGEST = "deadline"
STATUS = {LedgerKind.RESERVATION_SETTLED: SettlementStatus.COMPLETED,
          LedgerKind.RESERVATION_RELEASED: SettlementStatus.FAILED,
          LedgerKind.RESERVATION_EXPIRED: SettlementStatus.EXPIRED}


@dataclass(frozen=True)
class SettlePorts:
    ledger: Ledger
    projection: Projection
    outbox: LedgerOutbox
    reservation_ttl_s: int
    reconciler: Reconciler | None = None  # None: the tick only expires and publishes
    slots: InflightSlots | None = None  # frees the slots of the requests ended here


def command(p: Completed | Failed) -> EndCommand:
    """Completed charges prompt + completion tokens; Failed releases the whole reservation.
    Every ending of a request has one digest: a second one gets the first one's outcome."""
    digest = end_digest(p.request_id)
    if isinstance(p, Completed):
        return SettleReservation(p.tenant, p.request_id, p.prompt_tokens + p.completion_tokens,
                                 digest)
    return ReleaseReservation(p.tenant, p.request_id, p.reason, digest)


def settled(o: Outcome, p: Completed | Failed | None) -> Settled:
    """What record needs of a reservation's end (`p` is None for an expiry). The status and
    the charge are the ledger's; the output travels only with the charge it was billed for."""
    # Refused: a late settlement after expiry, or nothing was reserved.
    status = (STATUS.get(o.kind) if o.kind is not None else None) or (
        SettlementStatus.EXPIRED if o.reason == LedgerReason.RESERVATION_EXPIRED
        else SettlementStatus.FAILED)
    charged = o.amount if o.kind == LedgerKind.RESERVATION_SETTLED else 0
    done = p if isinstance(p, Completed) and o.kind == LedgerKind.RESERVATION_SETTLED else None
    return Settled(
        request_id=o.request_id, tenant=o.tenant, status=status,
        reserved_tokens=o.reserved or (p.reserved_tokens if p else 0), charged_tokens=charged,
        released_tokens=o.released if o.kind == LedgerKind.RESERVATION_SETTLED else o.amount,
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


def on_poison(p: Completed | Failed, reason: str, ports: SettlePorts) -> list[Settled]:
    """Release the reservation (or get the ending it already had) and end the request, so it
    is neither left `reserved` nor charged for what could not be settled."""
    release = Failed(p.request_id, p.tenant, p.reserved_tokens, f"unprocessable: {reason}"[:500])
    return handle([release], ports)


def sweep(ports: SettlePorts) -> list[Settled | Admitted | Reserved]:
    """Expire stale reservations, reconcile open requests, publish the ledger's events."""
    out: list[Settled | Admitted | Reserved] = [
        settled(o, None) for o in ports.ledger.expire_stale(ports.reservation_ttl_s)]
    if ports.reconciler is not None:
        work = reconcile(ports.reconciler, ports.ledger)
        end_overdue(work.overdue, ports.reconciler, ports)
        out += [*work.admitted, *work.reserved]
    ports.projection.catch_up(ports.ledger)
    ports.outbox.publish_pending()
    return out


def end_overdue(overdue: Sequence[OpenRequest], r: Reconciler, ports: SettlePorts) -> None:
    """End requests past their deadline, writing the record here rather than through record,
    so a request ends even when its records cannot reach record or record cannot write them.

    A `queued` one may still be reserved later by a message only delayed: it is first closed at
    the ledger, as a reservation refused (amount 0, a digest of its own), so a later reserve of
    that request id is refused as a conflict and holds nothing; it ends `rejected`. One the
    ledger had already reserved (or decided) ends `failed`, its reservation released."""
    if not overdue:
        return
    why = f"deadline: not ended within {r.request_deadline_s} s of admission"
    queued = [q for q in overdue if q.status == RequestStatus.QUEUED]
    closed = {o.request_id for o in ports.ledger.reserve(
        [ReserveTokens(q.tenant, q.request_id, 0, DEADLINE_DIGEST) for q in queued])
        if o.kind == LedgerKind.REQUEST_REJECTED}
    rest = [q for q in overdue if q.request_id not in closed]
    ended = handle([Failed(q.request_id, q.tenant, q.reserved_tokens or 0, why) for q in rest],
                   ports) if rest else []
    r.requests.finish(
        [FinalRecord(rid, RequestStatus.REJECTED, why, 0) for rid in sorted(closed)]
        + [FinalRecord(s.request_id, s.status.request_status, why if s.reason in (None, why) else
                       f"{why} ({s.reason})", s.charged_tokens) for s in ended])
    release_slots(ports.slots, [(q.tenant, q.request_id) for q in overdue])


STEP = Step(name="settle", consumes=("completed", "failed"),
            produces=("settled", "admitted", "reserved"), handle=handle, on_poison=on_poison,
            tick=sweep, tick_interval_s=lambda s: float(s.sweep_interval_s),
            batch_max=lambda s: 256)
