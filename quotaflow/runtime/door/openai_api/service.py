"""The OpenAI door's work, between the HTTP routes and the ports: submit a call as a quotaflow
request through the same checks and use case as the CloudEvents door, then answer it from the
token stream and the request record.

A call is a CloudEvent in all but its wire: source `openai`, id the `Idempotency-Key` header
(a fresh UUID without one), so `(tenant, "openai", key)` is its idempotency key and a resend
is the same request, never charged twice. It is accepted by the same `Acceptor` (the same
screening, store and publish as `POST /`), and is visible at `GET /v1/requests/{id}`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

from quotaflow.events.status import LedgerReason, RequestStatus
from quotaflow.functions.admit.handler import request_id_for
from quotaflow.ports import CONTEXT_LENGTH_EXCEEDED, Principal, RequestView
from quotaflow.runtime.door.accept import Acceptor
from quotaflow.runtime.door.fair_share import FairShare
from quotaflow.runtime.door.limits import seconds_to_next_period
from quotaflow.runtime.door.openai_api import shapes
from quotaflow.runtime.door.openai_api.errors import (
    SERVER,
    OpenAIError,
    bad_request,
    insufficient_quota,
)
from quotaflow.runtime.door.openai_api.mapping import Call
from quotaflow.runtime.door.openai_api.relay import Ended, Relay, Timing, charged_view
from quotaflow.runtime.door.parse import MAX_ATTRIBUTE_CHARS
from quotaflow.runtime.door.ports import DoorPorts
from quotaflow.runtime.door.void import Voided, Voider, is_voided
from quotaflow.runtime.handling import client_reason
from quotaflow.runtime.problem import Problem

SOURCE = "openai"
MAX_VOIDED_ATTEMPTS = 10  # 5xx answers one Idempotency-Key may have before it is refused
USAGE_WAIT_S = 10.0  # how long the usage chunk waits for the ledger's charge to be recorded


@dataclass(frozen=True)
class Submitted:
    """A call's client request, as `admit` takes it."""

    source: str
    ce_id: str
    data: dict[str, object]


def idempotency_id(header: str | None) -> str:
    """The CloudEvents id of a call: its `Idempotency-Key`, or a fresh UUID."""
    if header is None or header == "":
        return str(uuid.uuid4())
    if len(header) > MAX_ATTRIBUTE_CHARS or not (header.isascii() and header.isprintable()):
        raise bad_request(f"the Idempotency-Key header must be at most {MAX_ATTRIBUTE_CHARS} "
                          "printable ASCII characters", "Idempotency-Key")
    return header


class OpenAIDoor:
    """Submits calls and answers them over the door's ports."""

    def __init__(self, ports: DoorPorts, timing: Timing | None = None,
                 share: FairShare | None = None) -> None:
        self.ports = ports
        self.acceptor = Acceptor(ports, share)
        self.timing = timing or Timing()
        self.voider = Voider(ports.ledger, ports.requests, ports.stream, ports.gate)

    def submit(self, principal: Principal, call: Call, idempotency_key: str | None) -> str:
        """Rate limit, pre-check, store and publish the call; its request id."""
        ce_id = idempotency_id(idempotency_key)
        if idempotency_key:
            ce_id = self.live_attempt(principal.tenant, ce_id)
        return self.acceptor.accept(principal, Submitted(SOURCE, ce_id, call.data),
                                    call.max_tokens + 1).request_id

    def live_attempt(self, tenant: str, key: str) -> str:
        """The CloudEvents id of a call with Idempotency-Key `key`: the key itself, unless the
        door answered that request 5xx and voided it; then the key's next attempt (`key#retry-2`
        and on). A retry after a 5xx is a fresh, billable request, as it is without a key,
        never a replay of the voided one; a retry of anything else is the same request."""
        for attempt in range(1, MAX_VOIDED_ATTEMPTS + 1):
            ce_id = key if attempt == 1 else f"{key}#retry-{attempt}"
            found = self.ports.requests.fetch(tenant, request_id_for(tenant, SOURCE, ce_id))
            if found is None or not is_voided(found.reason):
                return ce_id
        raise OpenAIError(409, f"the Idempotency-Key was answered 5xx {MAX_VOIDED_ATTEMPTS} "
                          "times; use another Idempotency-Key", param="Idempotency-Key",
                          code="idempotency_conflict")

    def relay(self, principal: Principal, request_id: str, call: Call) -> Relay:
        return Relay(self.ports.stream, self.ports.requests, principal.tenant, request_id,
                     max_tokens=call.max_tokens, timing=self.timing)

    def answer(self, principal: Principal, request_id: str, call: Call) -> shapes.Answer:
        return shapes.Answer(call.kind, request_id, call.model, int(time.time()),
                             call.include_usage)

    def wait(self, principal: Principal, request_id: str,
             gone: Callable[[], bool] = lambda: False) -> RequestView:
        """The ended request's record (a call that did not stream), or a 504. A client that
        hung up meanwhile (`gone()`) cancels the request, as a hung-up stream does."""
        view = charged_view(self.ports.requests, principal.tenant, request_id,
                            self.timing.total_s, gone=gone)
        if view is None and gone():
            self.cancel(request_id)
            raise OpenAIError(499, "the client closed the connection; the request was "
                              "cancelled", code="client_closed")
        if view is None:
            raise OpenAIError(504, f"request {request_id} did not end in time; read it at "
                              f"/v1/requests/{request_id}", SERVER, "timeout")
        return view

    def usage_of(self, principal: Principal, request_id: str, ended: Ended) -> dict[str, int]:
        """What the ledger charged once the record has it; the stream's counts (which the
        ledger charges) if it is not recorded within `USAGE_WAIT_S`."""
        view = ended.view or charged_view(self.ports.requests, principal.tenant, request_id,
                                          USAGE_WAIT_S)
        if view is not None and view.charged_tokens is not None:
            return shapes.usage(view.prompt_tokens or 0, view.completion_tokens or 0,
                                view.charged_tokens)
        return shapes.usage(ended.prompt_tokens, ended.completion_tokens,
                            ended.prompt_tokens + ended.completion_tokens)

    def ended_error(self, principal: Principal, ended: Ended,
                    prompt_param: str = "messages") -> OpenAIError:
        """The error of a request that ended other than completed. A prompt over the model's
        context (refused by estimate, or by infer) is OpenAI's 400 `context_length_exceeded`,
        naming `prompt_param` (`messages` or `prompt`), with the reason's message and numbers."""
        view = ended.view
        reason = client_reason((view.reason if view is not None else None) or ended.status)
        code, _, message = reason.partition(": ")
        if code == CONTEXT_LENGTH_EXCEEDED:  # rejected by estimate, or failed by infer
            return bad_request(message, prompt_param, CONTEXT_LENGTH_EXCEEDED)
        if ended.status == RequestStatus.REJECTED and code == LedgerReason.QUOTA_EXCEEDED:
            # The ledger's reason names the level that refused and what it had left
            # (`quota_exceeded: team 'ml' of tenant 'acme' has $0.004200 of $5.000000 left
            # this period`); a tenant's own grant refuses with the bare code.
            now = self.ports.clock.now().astimezone(UTC)
            return insufficient_quota(
                (message + " (the request's worst case: its prompt plus max_tokens)") if message
                else (f"tenant {principal.tenant} has not enough quota left for this request "
                      "(its prompt plus max_tokens)"),
                seconds_to_next_period(principal.plan_period, now, principal.time_zone))
        if ended.status == RequestStatus.EXPIRED:
            return OpenAIError(503, f"the request's reservation expired ({reason}); send it "
                               "again", SERVER, "service_unavailable", headers={"Retry-After": "5"})
        return OpenAIError(500, f"the request {ended.status}: {reason}", SERVER,
                           "request_" + ended.status)

    def cancel(self, request_id: str) -> None:
        """The client hung up: infer stops the request within a few tokens."""
        if self.ports.stream is not None:
            self.ports.stream.cancel(request_id)

    def void(self, principal: Principal, request_id: str, why: str) -> Voided:
        """The door answers 5xx for a stored request: end it unbilled (see `door.void`)."""
        return self.voider.void(principal.tenant, request_id, why)


def answered_status(exc: Exception) -> int:
    """The HTTP status the routes answer `exc` with (anything unexpected is a 5xx)."""
    if isinstance(exc, OpenAIError):
        return exc.status
    if isinstance(exc, Problem):
        return exc.status
    return 500
