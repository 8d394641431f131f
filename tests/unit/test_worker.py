"""The Kafka loop's pure parts: which offsets a batch commits, how a failing batch is retried
record by record until only the poison record is given up, and how outputs are enveloped;
which errors are an outage (retried with backoff, never dead-lettered) and which a record's,
the backoff, and where a retried batch rewinds to."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka import KafkaError, KafkaException

from quotaflow.events.payloads import Failed
from quotaflow.functions.infer.handler import on_poison as infer_poison
from quotaflow.ports import PublishTimeout
from quotaflow.runtime.faults import backoff_s, is_infrastructure, producer_failed
from quotaflow.runtime.handling import handle_with_retries, publish
from quotaflow.runtime.inflight import batch_offsets, rewind_offsets
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


class Outage:
    """Ports of a step whose backing service is down for the first `down` calls."""

    def __init__(self, error: Exception, down: int) -> None:
        self.error, self.down, self.calls = error, down, 0


def outage_step() -> Any:
    from quotaflow.events.payloads import Reserved
    from quotaflow.runtime.step import Step

    def handle(payloads: Any, ports: Outage) -> list[Failed]:
        ports.calls += 1
        if ports.calls <= ports.down:
            raise ports.error
        return [Failed(p.request_id, p.tenant, p.reserved_tokens, "fine")
                for p in payloads if isinstance(p, Reserved)]

    return Step(name="infer", consumes=("reserved",), produces=("failed",), handle=handle)


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("terminating connection due to administrator command"),
    psycopg.InterfaceError("the connection is closed"),
    redis.ConnectionError("Connection reset by peer"), redis.TimeoutError("Timeout reading"),
    PublishTimeout("3 Kafka messages not delivered within 30 s"),
    KafkaException(KafkaError(KafkaError._TRANSPORT)),
    KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)),
    BufferError("Local: Queue full"),
])
def test_an_outage_is_raised_to_the_loop_without_dead_lettering_any_record(
        error: Exception) -> None:
    assert is_infrastructure(error)
    dead: list[str] = []
    batch = [(None, upstream(reserved(rid, "x", 6))) for rid in ("r1", "r2")]
    ports = Outage(error, down=1)
    with pytest.raises(type(error)):
        handle_with_retries(outage_step(), ports, SETTINGS, batch,
                            lambda m, e, reason: dead.append(reason) or [])
    assert dead == [] and ports.calls == 1  # not retried one by one, nothing given up
    # The loop's retry of the same batch, the service back: every record handled.
    out = handle_with_retries(outage_step(), ports, SETTINGS, batch, lambda *a: [])
    assert [o.request_id for o in out] == ["r1", "r2"]


def test_an_outage_in_a_record_retried_alone_is_raised_too() -> None:
    ports = Outage(psycopg.OperationalError("server closed the connection"), down=0)
    step = fragile_step()
    calls = Fragile()

    def handle(payloads: Any, p: Any) -> Any:
        if len(payloads) == 1 and payloads[0].request_id == "r3":
            raise ports.error
        return step.handle(payloads, calls)

    batch = [(None, upstream(reserved(rid, "x", 6))) for rid in ("r1", "boom", "r3")]
    dead: list[str] = []
    with pytest.raises(psycopg.OperationalError):
        handle_with_retries(replace(step, handle=handle), ports, SETTINGS, batch,
                            lambda m, e, reason: dead.append(reason) or [])
    # "boom" is the record's own fault and was given up; the outage on r3 was not.
    assert dead == ["handler_error: RuntimeError: model exploded"]


@pytest.mark.parametrize("error", [
    ValueError("bad amount"), KeyError("tenant"), RuntimeError("model exploded"),
    psycopg.errors.InvalidTextRepresentation("invalid input syntax"),
    psycopg.errors.CharacterNotInRepertoire("invalid byte sequence"),
    KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)),
])
def test_an_error_about_a_record_is_not_taken_for_an_outage(error: Exception) -> None:
    assert not is_infrastructure(error)


def test_an_outage_wrapped_in_another_error_is_still_an_outage() -> None:
    try:
        try:
            raise redis.ConnectionError("Connection refused")
        except redis.ConnectionError as inner:
            raise RuntimeError("projection catch-up failed") from inner
    except RuntimeError as outer:
        assert is_infrastructure(outer)


def test_the_backoff_doubles_up_to_the_cap_with_jitter_under_half() -> None:
    at_most = [backoff_s(n, 10, jitter=lambda: 1.0) for n in range(10)]
    assert at_most[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert at_most[-1] == 10 and max(at_most) == 10
    assert backoff_s(3, 10, jitter=lambda: 0.0) == pytest.approx(0.4)
    assert backoff_s(10_000, 10, jitter=lambda: 0.0) == 5


def test_a_retried_batch_is_rewound_to_its_first_record_per_partition() -> None:
    msgs = [FakeMessage("a", 0, 7), FakeMessage("a", 1, 3), FakeMessage("a", 0, 5),
            FakeMessage("b", 0, 9), FakeMessage("a", 1, 1, failed=True)]
    assert [(tp.topic, tp.partition, tp.offset)
            for tp in rewind_offsets(msgs)] == [  # type: ignore[arg-type]
        ("a", 0, 5), ("a", 1, 3), ("b", 0, 9)]


def test_only_a_fatal_producer_error_asks_for_a_new_producer() -> None:
    fatal = KafkaError(KafkaError._FATAL, "producer fenced", fatal=True)
    assert not producer_failed(RuntimeError("x"))
    assert producer_failed(KafkaException(fatal))
    assert not producer_failed(KafkaException(KafkaError(KafkaError._TRANSPORT)))
