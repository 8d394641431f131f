"""estimate: count the prompt with the model's own tokenizer (chat template applied);
the worst case to reserve is prompt tokens + max_tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.envelope import Event
from quotaflow.model.base import Tokenizer
from quotaflow.runtime.bootstrap import load_tokenizer
from quotaflow.runtime.emit import emit, messages_of, request_part, unprocessable
from quotaflow.runtime.step import Step
from quotaflow.settings import Settings


@dataclass
class EstimatePorts:
    tokenizer: Tokenizer

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


def make_ports(settings: Settings) -> EstimatePorts:
    return EstimatePorts(load_tokenizer(settings))


def handle(events: Sequence[Event], ports: EstimatePorts) -> list[Event]:
    out = []
    for ev in events:
        prompt_tokens = ports.tokenizer.count_prompt_tokens(messages_of(ev.data))
        out.append(emit("estimated", "estimate", {
            **request_part(ev.data),
            "prompt_tokens": prompt_tokens,
            "estimate_tokens": prompt_tokens + int(ev.data["max_tokens"]),
        }))
    return out


def on_poison(ev: Event, reason: str, ports: EstimatePorts) -> list[Event]:
    return unprocessable("estimate", ev, reason)


STEP = Step(name="estimate", consumes=("admitted",), produces=("estimated", "rejected"),
            handle=handle, make_ports=make_ports, on_poison=on_poison)
