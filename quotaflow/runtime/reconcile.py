"""The reconciler: every admitted request ends, exactly once, within a bounded time, whatever
was lost on the way (a message, a process, the broker's data).

PostgreSQL is the system of record: admit stores each request with the client's data before
anything is published. Settle's periodic tick (a timer locally, the PingSource on Knative)
runs `reconcile`, which reads the open requests that have neither moved nor been re-driven
for `redrive_after_s` and:

- publishes a `queued` one again as `admitted`, identical to the first, so that every step
  answers its first outcome (the ledger is idempotent by request id and digest);
- publishes a `reserved` one again as `reserved`, rebuilt from the stored request and the
  ledger's outcome of its reservation (asked again with the same digest, the ledger answers
  the first outcome and reserves nothing); settle ends the reservation once, and the TTL sweep
  expires it if inference never completes;
- hands back the ones open past `request_deadline_s` since admission, for settle to end: a
  `queued` one is first closed at the ledger (so a delayed message cannot reserve for it
  later) and ends `rejected`; one the ledger reserved ends `failed`, its reservation released
  (or as the ledger already ended it).

Bounded: each re-drive is counted and a request is re-driven at most once per
`redrive_after_s`, so at most `request_deadline_s / redrive_after_s` times before its deadline
ends it. A re-drive may run a step twice for one request (a message only delayed, not lost);
each step's idempotency makes that harmless."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from quotaflow.events.payloads import Admitted, Reserved
from quotaflow.events.status import RequestStatus
from quotaflow.ports import Clock, Ledger, OpenRequest, OpenRequests, ReserveTokens
from quotaflow.runtime.idempotency import admitted_payload, reserve_digest


@dataclass(frozen=True)
class Reconciler:
    """What reconciling needs besides the ledger: the request records, the ledger's clock (the
    one the records are stamped with) and the two delays."""

    requests: OpenRequests
    clock: Clock
    redrive_after_s: int
    request_deadline_s: int
    batch: int = 500  # requests looked at per tick


@dataclass(frozen=True)
class Reconciled:
    """A tick's work: payloads to publish again, and requests to end (past their deadline)."""

    admitted: list[Admitted] = field(default_factory=list)
    reserved: list[Reserved] = field(default_factory=list)
    overdue: list[OpenRequest] = field(default_factory=list)


def reconcile(r: Reconciler, ledger: Ledger) -> Reconciled:
    """Decide what to re-drive and what to end, and count the re-drives."""
    now = r.clock.now()
    deadline = now - timedelta(seconds=r.request_deadline_s)
    out = Reconciled()
    to_reserve: list[tuple[Admitted, int, int]] = []  # (request, reserved, prompt tokens)
    stale = r.requests.open_since(now - timedelta(seconds=r.redrive_after_s), r.batch)
    for req in stale:
        if req.admitted_at <= deadline:
            out.overdue.append(req)
            continue
        if not req.payload:
            continue  # stored before requests kept their data: only the deadline can end it
        admitted = admitted_payload(req.request_id, req.tenant, req.key_id, req.payload,
                                    req.admitted_at)
        if req.status == RequestStatus.QUEUED:
            out.admitted.append(admitted)
        elif req.reserved_tokens is not None:
            to_reserve.append((admitted, req.reserved_tokens, req.prompt_tokens or 0))
    out.reserved.extend(_reserved(ledger, to_reserve))
    # Every request looked at is counted, those left alone or past their deadline too: none
    # comes back before `redrive_after_s` has passed again, so a request that cannot be
    # re-driven (or whose ending failed) never holds a place in every tick's batch.
    r.requests.note_redriven([req.request_id for req in stale])
    return out


def _reserved(ledger: Ledger, requests: Sequence[tuple[Admitted, int, int]]) -> list[Reserved]:
    """The `reserved` payloads of reserved requests, from the ledger's first outcome."""
    outcomes = ledger.reserve([ReserveTokens(a.tenant, a.request_id, amount,
                                             reserve_digest(a, amount))
                               for a, amount, _ in requests])
    # An outcome that is not the reservation (its first command had another digest) leaves
    # the request to its deadline.
    return [Reserved(**a.request_fields(), prompt_tokens=prompt, reserved_tokens=o.amount,
                     period=o.period, ledger_seq=o.seq)
            for (a, _, prompt), o in zip(requests, outcomes, strict=True) if o.accepted]
