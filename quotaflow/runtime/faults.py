"""Which failures are the infrastructure's and which are a record's, and how long to wait
before trying again. `is_infrastructure` is the one classification of outages: a step retries
such an error with backoff, the door and the HTTP entries answer it 503 with `Retry-After`, and
the command line prints one line naming the service (`describe`) and exits 3.

A step that cannot reach PostgreSQL, Redis or Kafka has nothing wrong with the record in hand:
dead-lettering it would throw away a good request because of an outage (a one-second database
failover once dead-lettered hundreds). Such errors are retried, with exponential backoff,
for as long as the outage lasts, and no offset is committed meanwhile. Anything else raised by
a handler is taken to be about the record and keeps the per-record retries, then the
dead-letter topic."""

from __future__ import annotations

import random
from collections.abc import Callable

import psycopg
import redis
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import Counter

from quotaflow.ports import PublishTimeout

INFRA_RETRIES = Counter("qf_infra_retries_total",
                        "Batches retried after an infrastructure error", ["step", "error"])

_INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection lost, server shutdown, statement timeout, deadlock
    psycopg.InterfaceError,  # the connection is closed
    redis.ConnectionError,
    redis.TimeoutError,
    PublishTimeout,
    ConnectionError,  # a socket refused or reset
    TimeoutError,
    BufferError,  # the Kafka producer's local queue is full: the broker takes nothing
)


def _kafka_transport(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError):
        return False
    # A produce call on a producer that already failed for good raises `_FATAL` without the
    # error's fatal flag: it is the producer, not the record.
    return bool(err.retriable() or err.fatal() or err.code() in (
        KafkaError._FATAL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC))


def is_infrastructure(exc: BaseException) -> bool:
    """True if `exc` (or what caused it) is a backing service being unreachable, slow or
    restarting, rather than something wrong with the record being handled."""
    return any(isinstance(c, _INFRASTRUCTURE)
               or (isinstance(c, KafkaException) and _kafka_transport(c)) for c in _causes(exc))


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not c for c in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def describe(exc: BaseException) -> str:
    """One line for a person: which service failed (PostgreSQL, Redis, Kafka) and its first
    line of error, with no trace."""
    cause = next((c for c in _causes(exc) if _service(c)), exc)
    detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    return f"{_service(cause) or 'a backing service'} is unavailable: {detail}"


def _service(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return "PostgreSQL"
    if isinstance(exc, redis.RedisError):
        return "Redis"
    if isinstance(exc, KafkaException | PublishTimeout | BufferError):
        return "Kafka"
    return ""


def producer_failed(exc: BaseException) -> bool:
    """True if `exc` says a Kafka producer failed for good (a fatal error of the idempotent
    producer, e.g. after a broker lost its state): only a new producer can go on."""
    return any(isinstance(c, KafkaException) and c.args and isinstance(c.args[0], KafkaError)
               and (c.args[0].fatal() or c.args[0].code() == KafkaError._FATAL)
               for c in _causes(exc))


def backoff_s(attempt: int, max_s: float, base_s: float = 0.1,
              jitter: Callable[[], float] = random.random) -> float:
    """The pause before retry number `attempt` (0 first): doubling from `base_s`, capped at
    `max_s`, with up to half of it random so that restarted steps do not retry in step."""
    delay = min(max_s, base_s * float(2 ** min(attempt, 30)))
    return delay * (0.5 + 0.5 * jitter())


def error_name(exc: BaseException) -> str:
    """A short label for the metric and the log."""
    return type(exc).__name__[:60]
