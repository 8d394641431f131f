"""estimate: count the prompt with the model's own tokenizer (chat template applied);
the worst case to reserve is prompt tokens + max_tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.payloads import Admitted, Estimated, Rejected
from quotaflow.ports import ChatMessage, Tokenizer
from quotaflow.runtime.step import Step


@dataclass(frozen=True)
class EstimatePorts:
    tokenizer: Tokenizer


def handle(payloads: Sequence[Admitted], ports: EstimatePorts) -> list[Estimated]:
    """One estimate per admitted request, in order."""
    out = []
    for p in payloads:
        messages = tuple(ChatMessage(m.role, m.content) for m in p.messages)
        prompt_tokens = ports.tokenizer.count_prompt_tokens(messages)
        out.append(Estimated(**p.request_fields(), prompt_tokens=prompt_tokens,
                             estimate_tokens=prompt_tokens + p.max_tokens))
    return out


def on_poison(p: Admitted, reason: str, ports: EstimatePorts) -> list[Rejected]:
    """Nothing was reserved: reject the request so its record ends instead of staying queued."""
    return [Rejected(p.request_id, p.tenant, p.max_tokens, f"unprocessable: {reason}"[:500])]


STEP = Step(name="estimate", consumes=("admitted",), produces=("estimated", "rejected"),
            handle=handle, on_poison=on_poison)
