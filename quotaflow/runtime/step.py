"""What a pipeline step is: a handler over typed payloads and its ports, and how it is run.

The same `Step` runs as a Kafka consumer loop (`quotaflow.runtime.worker`) and as an HTTP
CloudEvents endpoint (`quotaflow.runtime.http_entry`, what Knative's KafkaSource calls). The
runtime decodes records into payloads, calls the handler, and wraps what it returns in
envelopes (`quotaflow.events.envelope.Envelope.of`) whose ids derive from the request id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from quotaflow.events.payloads import Payload
from quotaflow.settings import Settings


class Resources(Protocol):
    """What a running step holds open (connections, a model): it is ready, then closed."""

    def ready(self) -> bool:
        """True once the step can take traffic (connections open, model loaded)."""
        ...

    def close(self) -> None: ...


class Connection(Protocol):
    """A PostgreSQL connection, or a `Reconnecting` holder (closed while it cannot reopen)."""

    @property
    def closed(self) -> bool: ...


@dataclass(frozen=True)
class Held:
    """The `Resources` of ports: ready while none of their PostgreSQL connections is closed;
    `close` runs the closers in order. `Held()` holds nothing (the in-memory fakes)."""

    connections: Sequence[Connection] = ()
    closers: Sequence[Callable[[], None]] = field(default=())

    def ready(self) -> bool:
        return not any(conn.closed for conn in self.connections)

    def close(self) -> None:
        for close in self.closers:
            close()


In = TypeVar("In")
P = TypeVar("P")

# The records a step takes a poll unless it says otherwise.
POLL_BATCH = 64


@dataclass(frozen=True)
class Step(Generic[In, P]):
    name: str
    consumes: tuple[str, ...]  # catalog event names (= logical topics)
    produces: tuple[str, ...]
    handle: Callable[[Sequence[In], P], Sequence[Payload]]
    # Outputs for an input that failed all retries and went to the dead-letter topic
    # (e.g. infer answers `failed`, so settle releases the reservation).
    on_poison: Callable[[In, str, P], Sequence[Payload]] | None = None
    # Periodic work and its period (the reservation sweep, the ledger relay).
    tick: Callable[[P], Sequence[Payload]] | None = None
    tick_interval_s: Callable[[Settings], float] = field(default=lambda s: 0.0)
    # How many records one handler call may take (infer batches, reserve group-commits).
    batch_max: Callable[[Settings], int] = field(default=lambda s: POLL_BATCH)
    # How many records the Kafka loop may be handling at once, each in a handler call of its
    # own (runtime/inflight.py); 1: one handler call per polled batch, on the loop's thread.
    # infer takes more, so requests polled while the model decodes join its running batch.
    in_flight: Callable[[Settings], int] = field(default=lambda s: 1)


AnyStep = Step[Any, Any]
