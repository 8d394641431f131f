"""What happens to a batch of events in any runner (the Kafka loop, the HTTP entry): handle it
with retries, dead-letter what still fails, and publish the outputs."""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Message

from quotaflow.adapters import kafka
from quotaflow.events.catalog import dead_letter_suffix
from quotaflow.events.envelope import Envelope, to_kafka
from quotaflow.events.payloads import Payload
from quotaflow.runtime import faults, metrics
from quotaflow.runtime.step import AnyStep
from quotaflow.settings import Settings

log = logging.getLogger(__name__)
OnDead = Callable[[Message | None, Envelope, str], Sequence[Payload]]
HANDLER_ERROR = "handler_error"  # a given-up record's reason: this code, then the exception


def client_reason(reason: str) -> str:
    """What a client may read of why its request ended: `reason` cut after its
    `handler_error` code, since what follows is an exception's text (library, model node and
    file names). The log, with the request's event id, and the dead-letter record's
    `qf_dlq_reason` header keep the whole of it."""
    head, found, _ = reason.partition(HANDLER_ERROR)
    return head + HANDLER_ERROR if found else reason


def publish(step: AnyStep, settings: Settings, producer: kafka.AnyProducer,
            payloads: Sequence[Payload]) -> list[Envelope]:
    """Produce each output in the envelope `step` sends it in (not yet flushed)."""
    envelopes = [Envelope.of(p, step.name) for p in payloads]
    for env in envelopes:
        kafka.produce(producer, settings.topic(env.type.topic), to_kafka(env))
    # Counted once per type and batch: a labelled child's lookup per record was a measurable
    # share of a step's CPU.
    for name, n in Counter(env.type.name for env in envelopes).items():
        metrics.EVENTS_OUT.labels(step.name, name).inc(n)
    return envelopes


def dead_letter(step: AnyStep, producer: kafka.AnyProducer, msg: Message, reason: str) -> None:
    original = msg.headers() or []
    headers = list(original.items() if isinstance(original, dict) else original)
    headers += [("qf_dlq_reason", reason.encode()[:2000]), ("qf_dlq_step", step.name.encode()),
                ("qf_dlq_topic", (msg.topic() or "").encode()),
                ("qf_dlq_partition", str(msg.partition()).encode()),
                ("qf_dlq_offset", str(msg.offset()).encode())]
    producer.produce((msg.topic() or "") + dead_letter_suffix(), value=msg.value(), key=msg.key(),
                     headers=headers)
    metrics.DEAD_LETTERS.labels(step.name, reason.split(":")[0][:60]).inc()
    log.warning("dead-lettered %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), reason)


def handle_with_retries(step: AnyStep, ports: Any, settings: Settings,
                        batch: Sequence[tuple[Message | None, Envelope]],
                        on_dead: OnDead) -> list[Payload]:
    """Handle a batch; if it fails, handle each event alone with retries, and give an event
    that still fails to `on_dead(msg, envelope, reason)` so the rest of the batch goes on.
    An infrastructure error is raised to the caller at once: it is no record's fault."""
    with metrics.HANDLER_SECONDS.labels(step.name).time():
        try:
            return list(step.handle([env.payload for _, env in batch], ports))
        except Exception as exc:
            if faults.is_infrastructure(exc):
                raise
            log.exception("step %s: batch of %d failed; retrying one by one", step.name, len(batch))
    outputs: list[Payload] = []
    for msg, ev in batch:
        reason = ""
        for attempt in range(max(1, settings.handler_retries)):
            try:
                outputs += step.handle([ev.payload], ports)
                break
            except Exception as exc:
                if faults.is_infrastructure(exc):
                    raise
                reason = f"{HANDLER_ERROR}: {type(exc).__name__}: {exc}"
                log.warning("step %s: %s attempt %d failed: %s\n%s", step.name, ev.id,
                            attempt + 1, reason, traceback.format_exc(limit=3))
                time.sleep(0.05 * (attempt + 1))
        else:
            outputs += on_dead(msg, ev, reason)
    return outputs
