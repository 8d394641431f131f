"""The Kafka loop's pure parts: which offsets a batch commits, how a failing batch is retried
record by record until only the poison record is given up, and how outputs are enveloped."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from events.payloads import Failed
from functions.infer.handler import on_poison as infer_poison
from quotaflow.runtime.worker import batch_offsets, handle_with_retries, publish
from quotaflow.settings import Settings
from tests.unit.fakes import reserved
from tests.unit.runtime_fakes import FakeProducer, Fragile, fragile_step, upstream

SETTINGS = replace(Settings(), handler_retries=2, topic_prefix="t.")


@dataclass
class FakeMessage:
    """Only what batch_offsets reads of a confluent_kafka.Message."""

    t: str
    p: int
    o: int
    failed: bool = False

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def error(self) -> object:
        return "fetch error" if self.failed else None


def test_a_batch_commits_one_past_its_last_record_per_partition_and_nothing_else() -> None:
    msgs = [FakeMessage("a", 0, 7), FakeMessage("a", 1, 3), FakeMessage("a", 0, 9),
            FakeMessage("b", 0, 0), FakeMessage("a", 1, 99, failed=True)]
    done = batch_offsets(msgs)  # type: ignore[arg-type]
    assert [(tp.topic, tp.partition, tp.offset) for tp in done] == [
        ("a", 0, 10), ("a", 1, 4), ("b", 0, 1)]


def test_a_failing_batch_is_retried_alone_and_only_the_poison_record_is_given_up() -> None:
    ports, dead = Fragile(), []

    def on_dead(msg: Any, env: Any, reason: str) -> list[Failed]:
        dead.append(reason)
        return infer_poison(env.payload, reason, None)  # type: ignore[arg-type]

    batch = [(None, upstream(reserved(rid, "x", 6))) for rid in ("r1", "boom2", "r3")]
    out = handle_with_retries(fragile_step(), ports, SETTINGS, batch, on_dead)
    assert all(isinstance(o, Failed) for o in out)
    assert [(o.request_id, o.reason[:30]) for o in out if isinstance(o, Failed)] == [
        ("r1", "fine"), ("boom2", "handler_error: RuntimeError: m"), ("r3", "fine")]
    assert dead == ["handler_error: RuntimeError: model exploded"]
    # Tried in its batch, then alone handler_retries times, then given up: not forever.
    assert ports.calls == [["r1", "boom2", "r3"], ["r1"], ["boom2"], ["boom2"], ["r3"]]


def test_a_batch_that_succeeds_is_handled_in_one_call() -> None:
    ports = Fragile()
    batch = [(None, upstream(reserved(rid, "x", 6))) for rid in ("r1", "r2")]
    out = handle_with_retries(fragile_step(), ports, SETTINGS, batch, lambda *a: [])
    assert [o.request_id for o in out] == ["r1", "r2"]
    assert ports.calls == [["r1", "r2"]]


def test_outputs_are_published_in_envelopes_whose_ids_derive_from_the_request() -> None:
    producer = FakeProducer()
    sent = publish(fragile_step(), SETTINGS, producer,  # type: ignore[arg-type]
                   [Failed("r1", "acme", 6, "why")])
    (record,) = producer.produced
    assert record.topic == "t.failed" and record.key == "acme"
    env = record.envelope()
    assert (env.id, env.source, env.tenant) == ("r1/failed", "/quotaflow/infer", "acme")
    assert env.payload == Failed("r1", "acme", 6, "why")
    assert [e.id for e in sent] == ["r1/failed"]
