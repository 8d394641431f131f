"""The five handlers chained as the topics chain them, on the in-memory ports: a request is
charged exactly what the model used, one over the quota ends `rejected`, and the projection
and the read model agree with the ledger."""

from __future__ import annotations

from events.payloads import Rejected, Reserved
from functions.estimate.handler import EstimatePorts
from functions.estimate.handler import handle as estimate
from functions.infer.handler import InferPorts
from functions.infer.handler import handle as infer
from functions.record.handler import RecordPorts
from functions.record.handler import handle as record
from functions.reserve.handler import ReservePorts
from functions.reserve.handler import handle as reserve
from functions.settle.handler import SettlePorts
from functions.settle.handler import handle as settle
from quotaflow.ledger.domain import Balance
from quotaflow.model.standin import StandInModel
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
