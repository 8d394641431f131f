"""What a pipeline step is: a pure batch handler over its ports, and how to build the ports.

The same `Step` runs as a Kafka consumer loop (`events.worker`) and as an HTTP CloudEvents
endpoint (`events.http_entry`, what Knative's KafkaSource calls)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from events.envelope import Event
from quotaflow.settings import Settings


class Ports(Protocol):
    def ready(self) -> bool:
        """True once the step can take traffic (connections open, model loaded)."""
        ...

    def close(self) -> None: ...


P = TypeVar("P", bound=Ports)


@dataclass(frozen=True)
class Step(Generic[P]):
    name: str
    consumes: tuple[str, ...]  # catalog event names (= logical topics)
    produces: tuple[str, ...]
    handle: Callable[[Sequence[Event], P], list[Event]]
    make_ports: Callable[[Settings], P]
    # Outputs for an input that failed all retries and went to the dead-letter topic
    # (e.g. infer answers `failed`, so settle releases the reservation).
    on_poison: Callable[[Event, str, P], list[Event]] | None = None
    # Periodic work and its period (the reservation sweep, the ledger relay).
    tick: Callable[[P], list[Event]] | None = None
    tick_interval_s: Callable[[Settings], float] = field(default=lambda s: 0.0)
    # How many records one handler call may take (infer batches, reserve group-commits).
    batch_max: Callable[[Settings], int] = field(default=lambda s: 64)
    # One output per input, in order: the HTTP entry may then gather concurrent requests
    # into one handler call (micro-batching), as the Kafka loop does with a poll.
    one_to_one: bool = False

    @property
    def source(self) -> str:
        return f"/quotaflow/{self.name}"


AnyStep = Step[Any]
