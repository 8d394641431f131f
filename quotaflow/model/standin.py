"""A deterministic stand-in model with no weights: same interface as the real one.

Tokens are whitespace-separated words; the "chat template" adds one token per message for its
role marker. The completion echoes the last user message, reversed word by word, truncated to
max_tokens. Useful for plumbing tests and for running the pipeline without building a model."""

from __future__ import annotations

from collections.abc import Sequence

from quotaflow.model.base import ChatMessage, GenerationRequest, GenerationResult


class StandInModel:
    name = "standin"
    version = "standin-1"
    device = "cpu"

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(1 + len(m.content.split()) for m in messages)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [self._one(r) for r in batch]

    def _one(self, request: GenerationRequest) -> GenerationResult:
        user = [m.content for m in request.messages if m.role == "user"]
        words = (user[-1] if user else "").split()[::-1]
        out = words[: request.max_tokens]
        finish = "length" if len(words) > request.max_tokens else "stop"
        return GenerationResult(
            text=" ".join(out),
            prompt_tokens=self.count_prompt_tokens(request.messages),
            completion_tokens=len(out),
            finish_reason=finish,
        )
