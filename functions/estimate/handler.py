"""estimate: count the prompt with the model's own tokenizer (chat template applied);
the worst case to reserve is prompt tokens + max_tokens.

A request whose worst case exceeds the model's context is rejected here, before anything is
reserved: reason `context_length_exceeded: <message>`, the message naming the numbers (the
OpenAI door answers it as a 400 of that code). The door's byte and character limits are only a
cheap first filter; tokens are counted here, where the tokenizer is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quotaflow.events.payloads import Admitted, Estimated, Rejected
from quotaflow.ports import ChatMessage, Tokenizer, context_length_exceeded
from quotaflow.runtime.step import Step


@dataclass(frozen=True)
class EstimatePorts:
    tokenizer: Tokenizer


def handle(payloads: Sequence[Admitted], ports: EstimatePorts) -> list[Estimated | Rejected]:
    """One estimate per admitted request, in order; a rejection for one over the context."""
    out: list[Estimated | Rejected] = []
    context = ports.tokenizer.context_tokens
    for p in payloads:
        messages = tuple(ChatMessage(m.role, m.content) for m in p.messages)
        prompt_tokens = ports.tokenizer.count_prompt_tokens(messages)
        needed = prompt_tokens + p.max_tokens
        if needed > context:
            out.append(Rejected(p.request_id, p.tenant, needed, context_length_exceeded(
                context, prompt_tokens, p.max_tokens)))
            continue
        out.append(Estimated(**p.request_fields(), prompt_tokens=prompt_tokens,
                             estimate_tokens=needed))
    return out


def on_poison(p: Admitted, reason: str, ports: EstimatePorts) -> list[Rejected]:
    """Nothing was reserved: reject the request so its record ends instead of staying queued."""
    return [Rejected(p.request_id, p.tenant, p.max_tokens, f"unprocessable: {reason}"[:500])]


STEP = Step(name="estimate", consumes=("admitted",), produces=("estimated", "rejected"),
            handle=handle, on_poison=on_poison)
