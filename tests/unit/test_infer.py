"""infer: the completion budget is what the reservation leaves after the prompt, so the charge
never exceeds the reservation; a request that cannot be generated is answered `failed`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from quotaflow.functions.infer.handler import InferPorts, handle, on_poison
from quotaflow.model.standin import StandInModel
from quotaflow.ports import GenerationRequest, GenerationResult
from tests.unit.fakes import reserved

LONG = " ".join(f"w{i}" for i in range(40))  # the stand-in answers up to 40 words


@dataclass
class Spy(StandInModel):
    """The stand-in model, remembering each batch it was asked to generate."""

    batches: list[list[GenerationRequest]] = field(default_factory=list)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.batches.append(list(batch))
        return super().generate(batch)


def test_prompt_plus_completion_never_exceeds_the_reservation() -> None:
    # The prompt alone may exceed a reservation made for a smaller one: then nothing is generated.
    cases = [(r, m) for r in (0, 1, 41, 45, 60, 200) for m in (0, 3, 32)]
    out = handle([reserved(f"r{i}", LONG, r, m) for i, (r, m) in enumerate(cases)],
                 InferPorts(StandInModel()))
    for (reserved_tokens, max_tokens), c in zip(cases, out, strict=True):
        assert c.completion_tokens <= max(0, reserved_tokens - c.prompt_tokens)
        assert c.completion_tokens <= max_tokens
        assert c.reserved_tokens == reserved_tokens


def test_the_model_is_asked_for_at_most_what_the_reservation_leaves() -> None:
    spy = Spy()
    prompt_tokens = 1 + 40
    handle([reserved("tight", LONG, prompt_tokens + 5, max_tokens=32),
            reserved("roomy", LONG, prompt_tokens + 100, max_tokens=32),
            reserved("short", LONG, prompt_tokens - 3, max_tokens=32)], InferPorts(spy))
    (batch,) = spy.batches
    assert [r.max_tokens for r in batch] == [5, 32, 0]
    assert [r.request_id for r in batch] == ["tight", "roomy", "short"]


def test_a_batch_is_one_model_call_and_each_completion_says_so() -> None:
    spy = Spy()
    out = handle([reserved(f"r{i}", "one two three", 50) for i in range(3)], InferPorts(spy))
    assert len(spy.batches) == 1
    assert [c.request_id for c in out] == ["r0", "r1", "r2"]
    for c in out:
        assert (c.text, c.completion_tokens, c.finish_reason) == ("three two one", 3, "stop")
        assert (c.model, c.model_version, c.device, c.batch_size) == (
            "standin", "standin-1", "cpu", 3)
        assert c.latency_ms >= 0


def test_a_request_that_fails_every_retry_is_answered_failed_for_its_reservation() -> None:
    (f,) = on_poison(reserved("r9", "x", 33), "handler_error: RuntimeError: oom",
                     InferPorts(StandInModel()))
    assert (f.request_id, f.tenant, f.reserved_tokens, f.reason) == (
        "r9", "acme", 33, "handler_error: RuntimeError: oom")
