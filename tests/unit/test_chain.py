"""The five handlers chained as the topics chain them, on the in-memory ports: a request is
charged exactly what the model used, one over the quota ends `rejected`, a client's resend is
the same request charged once, and the projection and the read model agree with the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quotaflow.events.payloads import Rejected, Reserved
from quotaflow.functions.admit.handler import AdmitPorts, admit
from quotaflow.functions.estimate.handler import EstimatePorts
from quotaflow.functions.estimate.handler import handle as estimate
from quotaflow.functions.infer.handler import InferPorts
from quotaflow.functions.infer.handler import handle as infer
from quotaflow.functions.record.handler import RecordPorts
from quotaflow.functions.record.handler import handle as record
from quotaflow.functions.reserve.handler import ReservePorts
from quotaflow.functions.reserve.handler import handle as reserve
from quotaflow.functions.settle.handler import SettlePorts
from quotaflow.functions.settle.handler import handle as settle
from quotaflow.ledger.domain import Balance
from quotaflow.model.standin import StandInModel
from quotaflow.ports import Principal
from tests.unit.fakes import World, admitted


def test_requests_flow_through_every_step_and_are_charged_what_the_model_used() -> None:
    w, model = World(), StandInModel()
    w.ledger.add_tenant("acme", 40)
    requests = [admitted("small", "one two three", max_tokens=4),     # 4 + 4 = 8 reserved
                admitted("big", "the quick brown fox", max_tokens=30)]  # 5 + 30 = 35: too many
    w.queue(*requests)

    decided = reserve(estimate(requests, EstimatePorts(model)),
                      ReservePorts(w.ledger, w.projection, w.requests))
    ok = [p for p in decided if isinstance(p, Reserved)]
    refused = [p for p in decided if isinstance(p, Rejected)]
    assert [p.request_id for p in ok] == ["small"] and [p.request_id for p in refused] == ["big"]
    settled = settle(infer(ok, InferPorts(model)),
                     SettlePorts(w.ledger, w.projection, w.outbox, 300))
    recorded = record([*settled, *refused], RecordPorts(w.requests))

    assert [(r.request_id, r.status) for r in recorded] == [
        ("small", "completed"), ("big", "rejected")]
    small = w.requests.fetch("acme", "small")
    assert small is not None
    assert (small.output, small.prompt_tokens, small.completion_tokens) == ("three two one", 4, 3)
    assert (small.reserved_tokens, small.charged_tokens) == (8, 7)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=40, spent=7)
    assert w.projection.balance("acme", "2026-11") == Balance(granted=40, spent=7)


@dataclass(frozen=True)
class Sent:
    source: str = "/my/app"
    ce_id: str = "e-1"
    data: dict[str, Any] = field(default_factory=lambda: {
        "model": "standin", "messages": [{"role": "user", "content": "one two three"}],
        "max_tokens": 4, "temperature": None, "top_p": None, "seed": None})


def test_a_resend_while_queued_ends_completed_and_is_charged_once() -> None:
    w, model = World(), StandInModel()
    w.ledger.add_tenant("acme", 40)
    who = Principal("acme", "key-1", 600, "month")
    first = admit(who, Sent(), AdmitPorts(w.requests, w.clock))
    w.clock.advance(2.5)  # the client retries while its request is still queued
    again = admit(who, Sent(), AdmitPorts(w.requests, w.clock))
    assert again.admitted == first.admitted

    # Both deliveries go the whole way, one after the other.
    for batch in ([*first.admitted], [*again.admitted]):
        decided = reserve(estimate(batch, EstimatePorts(model)),
                          ReservePorts(w.ledger, w.projection, w.requests))
        assert [type(p) for p in decided] == [Reserved]
        ok = [p for p in decided if isinstance(p, Reserved)]
        settled = settle(infer(ok, InferPorts(model)),
                         SettlePorts(w.ledger, w.projection, w.outbox, 300))
        record(settled, RecordPorts(w.requests))

    view = w.requests.fetch("acme", first.request_id)
    assert view is not None
    assert (view.status, view.charged_tokens) == ("completed", 7)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=40, spent=7)
