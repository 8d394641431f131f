"""Stand-ins for what the runtime talks to: a Kafka producer that keeps what it was given,
and envelopes as a previous step would publish them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quotaflow.events.envelope import Envelope, from_kafka
from quotaflow.events.payloads import Payload
from quotaflow.runtime.step import Step


@dataclass
class Produced:
    topic: str
    value: bytes
    key: Any
    headers: list[tuple[str, bytes]]

    def envelope(self) -> Envelope:
        return from_kafka(self.headers, self.key, self.value)


@dataclass
class FakeProducer:
    """What `quotaflow.adapters.kafka` calls on a confluent_kafka.Producer; `flushed` counts
    how many records were flushed, so a test can tell produced from delivered."""

    produced: list[Produced] = field(default_factory=list)
    flushed: int = 0

    def produce(self, topic: str, value: bytes, key: Any = None,
                headers: list[tuple[str, bytes]] | None = None,
                on_delivery: Any = None) -> None:
        self.produced.append(Produced(topic, value, key, list(headers or [])))

    def flush(self, timeout: float = -1) -> int:
        self.flushed = len(self.produced)
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0


def upstream(payload: Payload) -> Envelope:
    """The envelope the step before would publish `payload` in."""
    return Envelope.of(payload, "upstream")


@dataclass
class Fragile:
    """Ports of a step whose handler fails on any request id starting with "boom"."""

    calls: list[list[str]] = field(default_factory=list)


def fragile_step(on_poison: Any = None) -> Step[Any, Fragile]:
    """A step over `reserved` that echoes each input as `failed` with reason "fine"."""
    from quotaflow.events.payloads import Failed, Reserved

    def handle(payloads: Any, ports: Fragile) -> list[Failed]:
        ports.calls.append([p.request_id for p in payloads])
        if any(p.request_id.startswith("boom") for p in payloads):
            raise RuntimeError("model exploded")
        return [Failed(p.request_id, p.tenant, p.reserved_tokens, "fine")
                for p in payloads if isinstance(p, Reserved)]

    return Step(name="infer", consumes=("reserved",), produces=("failed",), handle=handle,
                on_poison=on_poison)
