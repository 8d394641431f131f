"""estimate: the worst case to reserve is the prompt, counted by the model's own tokenizer,
plus max_tokens; an unprocessable request is rejected without a ledger event."""

from __future__ import annotations

from dataclasses import fields

from quotaflow.events.payloads import Admitted, Message, Rejected
from quotaflow.functions.estimate.handler import EstimatePorts, handle, on_poison
from quotaflow.model.standin import StandInModel
from quotaflow.ports import ChatMessage
from tests.unit.fakes import admitted

PORTS = EstimatePorts(StandInModel())


def test_estimate_is_the_prompt_tokens_with_the_template_plus_max_tokens() -> None:
    a = admitted("r1", "name three colours", max_tokens=7)
    (e,) = handle([a], PORTS)
    # The stand-in's template adds one token per message to its words.
    assert e.prompt_tokens == 1 + 3
    assert e.estimate_tokens == e.prompt_tokens + 7


def test_estimate_counts_every_message_and_carries_the_request_unchanged() -> None:
    base = admitted("r2")
    a = Admitted(**{**base.request_fields(), "messages": (
        Message("system", "be brief"), Message("user", "hello there friend"))})
    (e,) = handle([a], PORTS)
    assert e.prompt_tokens == StandInModel().count_prompt_tokens(
        [ChatMessage("system", "be brief"), ChatMessage("user", "hello there friend")]) == 7
    assert {f.name: getattr(e, f.name) for f in fields(Admitted)} == a.request_fields()


def test_a_batch_gets_one_estimate_per_request_in_order() -> None:
    batch = [admitted(f"r{i}", "word " * i) for i in range(1, 5)]
    out = handle(batch, PORTS)
    assert [e.request_id for e in out] == ["r1", "r2", "r3", "r4"]
    assert [e.prompt_tokens for e in out] == [2, 3, 4, 5]


def test_an_unprocessable_request_is_rejected_without_a_ledger_event() -> None:
    (r,) = on_poison(admitted("r3", max_tokens=9), "x" * 600, PORTS)
    assert isinstance(r, Rejected)
    assert (r.request_id, r.tenant, r.requested_tokens) == ("r3", "acme", 9)
    assert r.reason.startswith("unprocessable: x") and len(r.reason) == 500
    assert r.period is None and r.ledger_seq is None
