"""infer: run the model on a micro-batch of reserved requests and report the real token counts.

The completion budget is what the reservation leaves after the prompt, so the charge can never
exceed the reservation. A request that fails every retry goes to the dead-letter topic and is
answered `failed`, so settle releases its reservation."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from events.envelope import Event
from quotaflow.model.base import Generator
from quotaflow.runtime.bootstrap import load_generator
from quotaflow.runtime.emit import emit, generation_request
from quotaflow.runtime.step import Step
from quotaflow.settings import Settings


@dataclass
class InferPorts:
    generator: Generator

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


def make_ports(settings: Settings) -> InferPorts:
    return InferPorts(load_generator(settings))


def handle(events: Sequence[Event], ports: InferPorts) -> list[Event]:
    model = ports.generator
    batch = []
    for ev in events:
        req = replace(generation_request(ev.data), request_id=str(ev.data["request_id"]))
        budget = int(ev.data["reserved_tokens"]) - model.count_prompt_tokens(req.messages)
        batch.append(replace(req, max_tokens=max(0, min(req.max_tokens, budget))))
    started = time.perf_counter()
    results = model.generate(batch)
    latency_ms = (time.perf_counter() - started) * 1000
    return [emit("completed", "infer", {
        "request_id": ev.data["request_id"], "tenant": ev.tenant,
        "reserved_tokens": ev.data["reserved_tokens"], "text": r.text,
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
        "model": model.name, "model_version": r.model_version or model.version,
        "latency_ms": latency_ms,
        "finish_reason": r.finish_reason, "batch_size": len(batch), "device": model.device,
    }) for ev, r in zip(events, results, strict=True)]


def on_poison(ev: Event, reason: str, ports: InferPorts) -> list[Event]:
    return [emit("failed", "infer", {"request_id": ev.data["request_id"], "tenant": ev.tenant,
                                     "reserved_tokens": ev.data["reserved_tokens"],
                                     "reason": reason})]


STEP = Step(name="infer", consumes=("reserved",), produces=("completed", "failed"),
            handle=handle, make_ports=make_ports, on_poison=on_poison,
            batch_max=lambda s: s.batch_max, one_to_one=True)
