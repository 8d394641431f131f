"""infer: run the model on reserved requests and report the real token counts.

Batching is continuous: each request is a handler call of its own here, up to `QF_BATCH_MAX`
of them in flight at once, and the generator decodes all of them together, each joining the
running batch when it arrives and leaving it when it ends. So a request's completion goes out the
moment it ends, never waiting for a longer batch-mate. The stand-in model decodes at once and
batches nothing, so with it a polled batch is one handler call, on the loop's own thread: a call
per record would only add a thread hand-off and a produce request to each.

The completion budget is what the reservation leaves after the prompt, so the charge can never
exceed the reservation. A request that fails every retry goes to the dead-letter topic and is
answered `failed`, so settle releases its reservation.

Streaming: the generator publishes the deltas of requests that asked for it (`stream`) to the
token stream as it decodes, and stops any request whose client hung up; its completion tokens
are then what was generated, and settle releases the rest of the reservation. Only requests that
asked are published: a stream costs a write per token and Redis memory until it expires, which
nobody would read for the others; every request is still checked for cancellation."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from quotaflow.events.payloads import Completed, Failed, Reserved
from quotaflow.ports import (
    ChatMessage,
    GenerationRequest,
    Generator,
    TokenStream,
    context_length_exceeded,
)
from quotaflow.runtime.step import POLL_BATCH, Step


@dataclass(frozen=True)
class InferPorts:
    generator: Generator
    stream: TokenStream | None = None  # None: nothing is streamed or cancelled


def generation_request(p: Reserved, prompt_tokens: int) -> GenerationRequest:
    """The model call for `p`: max_tokens cut to what the reservation leaves after the prompt."""
    messages = tuple(ChatMessage(m.role, m.content) for m in p.messages)
    budget = p.reserved_tokens - prompt_tokens
    return GenerationRequest(messages, max(0, min(p.max_tokens, budget)), p.temperature,
                             p.top_p, p.seed, p.request_id, p.stop, p.stream)


def handle(payloads: Sequence[Reserved], ports: InferPorts) -> list[Completed | Failed]:
    """Generate for the whole batch in one model call; one completion per input, in order.

    A prompt plus max_tokens over the model's context is failed without running: estimate
    refuses those, but one estimated before it did, or for a version with a longer context,
    could still come, and running it would fail every request decoded with it."""
    model = ports.generator
    context = model.context_tokens
    prompts = [model.count_prompt_tokens(tuple(ChatMessage(m.role, m.content)
                                               for m in p.messages)) for p in payloads]
    asks = [generation_request(p, n) for p, n in zip(payloads, prompts, strict=True)]
    fits = [n + r.max_tokens <= context for n, r in zip(prompts, asks, strict=True)]
    batch = [r for r, ok in zip(asks, fits, strict=True) if ok]
    started = time.perf_counter()
    results = iter((model.generate(batch, ports.stream) if ports.stream
                    else model.generate(batch)) if batch else [])
    latency_ms = (time.perf_counter() - started) * 1000
    out: list[Completed | Failed] = []
    for p, n, ok in zip(payloads, prompts, fits, strict=True):
        if not ok:
            out.append(Failed(p.request_id, p.tenant, p.reserved_tokens,
                              context_length_exceeded(context, n, p.max_tokens)))
            continue
        r = next(results)
        out.append(Completed(p.request_id, p.tenant, p.reserved_tokens, r.text, r.prompt_tokens,
                             r.completion_tokens, model.name, r.model_version or model.version,
                             latency_ms, r.finish_reason, r.batch_size or len(batch),
                             model.device))
    return out


def on_poison(p: Reserved, reason: str, ports: InferPorts) -> list[Failed]:
    """Answer `failed`, so settle releases the reservation."""
    return [Failed(p.request_id, p.tenant, p.reserved_tokens, reason)]


STEP = Step(name="infer", consumes=("reserved",), produces=("completed", "failed"),
            handle=handle, on_poison=on_poison,
            # The stand-in answers any batch at once: a polled batch as large as the other
            # steps' costs one produce and one commit, where eight cost one per eight requests.
            batch_max=lambda s: POLL_BATCH if s.model_source == "standin" else s.batch_max,
            in_flight=lambda s: 1 if s.model_source == "standin" else s.batch_max)
