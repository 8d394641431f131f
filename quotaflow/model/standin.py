"""A deterministic stand-in model with no weights: same interface as the real one.

Tokens are whitespace-separated words; the "chat template" adds one token per message for its
role marker. The completion echoes the last user message, reversed word by word, truncated to
max_tokens. It decodes one word per step through the same streaming machinery as the real model
(stop sequences, deltas, cancellation), so the pipeline's streaming runs without building one.
Useful for plumbing tests and for running the pipeline without building a model."""

from __future__ import annotations

import time
from collections.abc import Sequence

from quotaflow.events.status import FinishReason
from quotaflow.model.base import ChatMessage, GenerationRequest, GenerationResult, TokenSink
from quotaflow.model.streaming import BatchStream

# The context of the model it stands in for (SmolLM2's), so a prompt over it is refused alike.
CONTEXT_TOKENS = 8192


class StandInModel:
    name = "standin"
    version = "standin-1"
    device = "cpu"
    token_delay_s = 0.0
    context_tokens = CONTEXT_TOKENS

    def __init__(self, token_delay_s: float = 0.0, context_tokens: int = CONTEXT_TOKENS) -> None:
        self.token_delay_s = token_delay_s  # a pause per decode step, as a real model takes
        self.context_tokens = context_tokens

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(1 + len(m.content.split()) for m in messages)

    def generate(self, batch: Sequence[GenerationRequest], sink: TokenSink | None = None
                 ) -> list[GenerationResult]:
        stream = BatchStream(batch, sink)
        words = [_answer(r) for r in batch]
        prompts = [self.count_prompt_tokens(r.messages) for r in batch]
        out = [0] * len(batch)  # words generated so far: one forward pass each

        def end(i: int, finish: FinishReason) -> None:
            stream.end(i, finish, prompts[i], out[i])

        for i, r in enumerate(batch):
            if not words[i] or r.max_tokens <= 0:
                end(i, FinishReason.STOP if not words[i] else FinishReason.LENGTH)
        live = [i for i in range(len(batch)) if stream.finish[i] is None]
        for i in stream.sync(live):
            end(i, FinishReason.CANCELLED)
        while live := [i for i in range(len(batch)) if stream.finish[i] is None]:
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            for i in live:
                word = words[i][out[i]]
                out[i] += 1
                if stream.add(i, word if out[i] == 1 else " " + word) or out[i] == len(words[i]):
                    end(i, FinishReason.STOP)
                elif out[i] >= batch[i].max_tokens:
                    end(i, FinishReason.LENGTH)
            for i in stream.sync([i for i in live if stream.finish[i] is None]):
                end(i, FinishReason.CANCELLED)
        stream.close()
        return [GenerationResult(row.text, prompts[i], out[i],
                                 stream.finish[i] or FinishReason.STOP)
                for i, row in enumerate(stream.rows)]


def _answer(request: GenerationRequest) -> list[str]:
    user = [m.content for m in request.messages if m.role == "user"]
    return (user[-1] if user else "").split()[::-1]
