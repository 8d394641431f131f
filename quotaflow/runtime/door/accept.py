"""The door's one path from a parsed request to its 202: screen it (a recent resend, the rate
limit and the quota pre-check, in one gate call), store it (group-committed) and publish its
`admitted` payload, waiting for its own delivery. The CloudEvents route and the OpenAI routes
both accept through here."""

from __future__ import annotations

from quotaflow.events.envelope import Envelope
from quotaflow.functions.admit.handler import (
    Admission,
    AdmitPorts,
    ClientRequest,
    IdempotencyConflict,
    admit,
)
from quotaflow.ports import Principal, PublishTimeout
from quotaflow.runtime import metrics
from quotaflow.runtime.door.fair_share import FairShare
from quotaflow.runtime.door.limits import AdmissionLimits, tokens_bound
from quotaflow.runtime.door.ports import DoorPorts


class Unpublished(PublishTimeout):
    """The request `request_id` is stored, but the event bus did not confirm it in time."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id} was stored but not published in time")
        self.request_id = request_id


class Acceptor:
    """Accepts requests over the door's ports."""

    def __init__(self, ports: DoorPorts, share: FairShare | None = None) -> None:
        self.ports = ports
        self.share = share  # counts resends and 409s, which the rate limit does not
        self.limits = AdmissionLimits(ports.gate, ports.clock)
        self.admit_ports = AdmitPorts(ports.requests, ports.clock)

    def accept(self, principal: Principal, request: ClientRequest,
               needs_tokens: int) -> Admission:
        """Durably accept `request` (a new one within its limits, or a resend) and publish
        it; raises the refusal, `IdempotencyConflict`, or `Unpublished` (the request is
        stored, so the reconciler re-drives it and a resend is answered as the same)."""
        try:
            admission = admit(principal, request, self.admit_ports, self.limits.screener(
                principal, needs_tokens, tokens_bound(request.data)))
        except IdempotencyConflict:
            self._count(principal, "reused id")
            raise
        if not admission.created:
            self._count(principal, "resend")
        try:
            self.ports.publisher.publish([Envelope.of(p, "admit") for p in admission.admitted])
        except PublishTimeout as exc:
            raise Unpublished(admission.request_id) from exc
        metrics.ADMIT_RESPONSES.labels("202").inc()
        return admission

    def _count(self, principal: Principal, what: str) -> None:
        if self.share is not None:
            self.share.count(principal.key_id, what)
