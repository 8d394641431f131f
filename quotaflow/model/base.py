"""The interface every model serves behind. estimate counts with `Tokenizer`; infer runs
`Generator.generate` on a micro-batch. Token counts are the model's own, so billing is exact.

Streaming is part of generation, not a wrapper around it: while it decodes a batch, a generator
hands each request's new text to a `TokenSink` after every step (in order, numbered) and stops a
request the sink reports cancelled. The text a result carries is, by construction, the
concatenation of the deltas streamed for it, whether anyone streamed or not: the same code path
produces both, so greedy streamed text equals non-streamed text."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from quotaflow.events.status import FinishReason

# The reason of a request whose prompt plus max_tokens the model's context cannot hold.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def context_length_exceeded(context_tokens: int, prompt_tokens: int, max_tokens: int) -> str:
    """That reason: its code, then what a client reads (OpenAI's own wording, the numbers)."""
    return (f"{CONTEXT_LENGTH_EXCEEDED}: This model's maximum context length is "
            f"{context_tokens} tokens. However, you requested {prompt_tokens + max_tokens} tokens "
            f"({prompt_tokens} in the prompt, {max_tokens} for max_tokens). Please reduce the "
            "length of the prompt or max_tokens.")


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
    request_id: str = ""  # routes canary traffic and names the stream; never changes the output
    stop: tuple[str, ...] = ()  # generation ends before the first of these the text contains
    stream: bool = False  # publish this request's deltas to the sink as they are decoded


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int  # forward passes run for this request: what is billed
    finish_reason: FinishReason  # stop, length or cancelled
    model_version: str = ""  # the version that produced it, when a router picked one
    # The most requests decoded together while it ran (0: not told). Not part of equality:
    # it describes the run, and the result is the same whatever it was.
    batch_size: int = field(default=0, compare=False)


@dataclass(frozen=True)
class TokenDelta:
    """New text of one request: `seq` counts 1, 2, 3... per request, with no gap."""

    request_id: str
    seq: int
    text: str


@dataclass(frozen=True)
class StreamEnd:
    """A request's last stream entry: how it ended and its exact token counts."""

    request_id: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class TokenSink(Protocol):
    """Where a generator sends deltas while it decodes (infer: the `TokenStream` port)."""

    def publish(self, deltas: Sequence[TokenDelta] = (), ends: Sequence[StreamEnd] = (),
                watch: Collection[str] = ()) -> set[str]:
        """Append `deltas`, then `ends`, to their requests' streams, in order, and answer which
        request ids of `watch` were cancelled: all in one round trip."""
        ...


class Tokenizer(Protocol):
    @property
    def context_tokens(self) -> int:
        """The most tokens the model attends to, prompt and completion together: its own
        context length (the model's config), never a number of ours."""
        ...

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

    def generate(self, batch: Sequence[GenerationRequest], sink: TokenSink | None = None
                 ) -> list[GenerationResult]:
        """Generate for every request of the batch; a result never depends on its batch-mates.
        With a sink: stream the deltas of requests with `stream` set, and stop any request the
        sink reports cancelled within a few tokens."""
        ...
