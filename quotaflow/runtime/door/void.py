"""Voiding a request the door answered with a 5xx, so that it is never billed.

The official OpenAI SDKs send no Idempotency-Key and retry a 5xx (and a time-out) twice: each
retry is a new request. A request the door stored and then answered 5xx for (the event bus did
not confirm it in time, the wait for its answer ran out, a backing service failed) would still
run and be charged, so one answer the client asked for once could be billed three times.

Voiding ends the request at the ledger, the one place that decides charges, before anything
else can: still `queued`, it is closed as a reservation refused (amount 0, a digest of its own,
as settle's deadline does), so a late `admitted` delivery is refused as a conflict and reserves
nothing; already reserved, its reservation is released with the one digest every ending of a
request shares, so infer's late `completed` gets that release back from settle, charged 0.
Whichever came first wins, atomically in the ledger: if settle had already charged the request,
the release gets the charge back and the void says so, and the door answers the request instead
of the 5xx. The token stream's cancel flag stops infer within a few tokens either way."""

from __future__ import annotations

from dataclasses import dataclass

from quotaflow.events.status import LedgerKind, RequestStatus
from quotaflow.ports import (
    FinalRecord,
    InflightSlots,
    Ledger,
    ReleaseReservation,
    RequestStore,
    ReserveTokens,
    TokenStream,
)
from quotaflow.runtime.idempotency import end_digest

# The digest of the zero reservation that closes a voided request: no real reservation command
# has it, so the reserve step's later command for that request id is a conflict.
VOID_DIGEST = "void"
VOIDED = "voided: "  # how a voided request's recorded reason starts


def is_voided(reason: str | None) -> bool:
    """Whether a request's recorded reason says the door voided it."""
    return reason is not None and reason.startswith(VOIDED)


@dataclass(frozen=True)
class Voided:
    """How a void ended: `billed` when the ledger had charged the request before it."""

    request_id: str
    billed: bool


class Voider:
    """Ends stored requests unbilled; without a ledger it can only cancel them."""

    def __init__(self, ledger: Ledger | None, requests: RequestStore,
                 stream: TokenStream | None, slots: InflightSlots | None = None) -> None:
        self.ledger = ledger
        self.requests = requests
        self.stream = stream
        self.slots = slots  # the ended request's in-flight slot is freed at once

    def void(self, tenant: str, request_id: str, why: str) -> Voided:
        """End `request_id` of `tenant` without a charge, unless the ledger charged it first."""
        if self.stream is not None:
            self.stream.cancel(request_id)
        if self.ledger is None:
            return Voided(request_id, False)
        reason = f"{VOIDED}{why}; not charged"
        closed = self.ledger.reserve([ReserveTokens(tenant, request_id, 0, VOID_DIGEST)])[0]
        if closed.kind == LedgerKind.REQUEST_REJECTED:
            self.requests.finish([FinalRecord(request_id, RequestStatus.REJECTED, reason, 0)])
            self._release(tenant, request_id)
            return Voided(request_id, False)
        ended = self.ledger.end([ReleaseReservation(tenant, request_id, reason,
                                                    end_digest(request_id))])[0]
        if ended.kind == LedgerKind.RESERVATION_SETTLED:
            return Voided(request_id, True)
        self.requests.finish([FinalRecord(request_id, RequestStatus.FAILED, reason, 0)])
        self._release(tenant, request_id)
        return Voided(request_id, False)

    def _release(self, tenant: str, request_id: str) -> None:
        if self.slots is not None:
            self.slots.release(tenant, [request_id])
