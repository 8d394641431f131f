"""The interface every model serves behind. estimate counts with `Tokenizer`; infer runs
`Generator.generate` on a micro-batch. Token counts are the model's own, so billing is exact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChatMessage:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float | None = None  # None or 0: greedy
    top_p: float | None = None
    seed: int | None = None
    request_id: str = ""  # routes canary traffic; never changes the output


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence) | "length" (max_tokens reached)
    model_version: str = ""  # the version that produced it, when a router picked one


class Tokenizer(Protocol):
    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the prompt with the chat template applied, exactly as `generate` feeds it."""
        ...


class Generator(Tokenizer, Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def device(self) -> str:
        """"cuda" or "cpu": where generation runs."""
        ...

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for every request of the batch; a result never depends on its batch-mates."""
        ...
