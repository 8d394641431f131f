"""The local stand-in for Knative's KafkaSource (`quotaflow dev up --knative`): per source in
knative/sources/, a consumer in the source's group reads its topic and POSTs each record to the
step's function as a binary-mode CloudEvent.

Follows KafkaSource's documented contract (knative/sources/*.yaml, FACTS.md "Knative"):
- a record that is a binary-mode CloudEvent (ours all are) is POSTed with its `ce_*` headers as
  `ce-*` HTTP headers, its `content-type`, and its value as the body;
- `ordering: ordered`: one event in flight per partition, the next only after the previous
  one's answer (and its retries) ended;
- `delivery.retry` / `backoffPolicy` / `backoffDelay` as the manifests set them (read from
  them here: one place); retried on no answer, 404, 408, 409, 429 and 5xx, the statuses
  Knative's data-plane spec names as retryable; any other non-2xx goes to the dead-letter sink
  at once;
- the dead-letter sink receives the event with the `knativeerrordest` (the URL that failed),
  `knativeerrorcode` (its last status; absent when it never answered) and `knativeerrordata`
  (its answer's body, base64, at most 1,024 bytes) extensions; the sink is KafkaSink in binary
  mode, so the record lands on the dead-letter topic with `ce_knativeerror*` headers;
- the offset is committed only after a 2xx or the dead-letter write: the function's reply is
  discarded (each function publishes its outputs with its own producer, as on a cluster).

Does not follow: one delivery thread serves all of a source's partitions, so a source has one
event in flight in all (the same as per partition with the local stack's one partition a topic;
a cluster delivers partitions in parallel); the dead-letter sink is written in process (no HTTP
hop to a KafkaSink); no SASL/TLS of its own (the stack's client settings apply); `initialOffset`
is not read: the project's consumers start a new group at `earliest`, as the manifests ask; a
record that is not a CloudEvent is POSTed with its headers as they are (KafkaSource would wrap
it in an event of its own); a POST waits up to the Service's `timeoutSeconds`
(`runtime.timeouts`), as the queue-proxy would cut it."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SOURCES_DIR = Path(__file__).resolve().parents[2] / "knative" / "sources"
SINKS = Path(__file__).resolve().parents[2] / "knative" / "sinks" / "dead-letter.yaml"
CLUSTER_TOPIC_PREFIX = "quotaflow."  # kafka/topics.yaml's names on a cluster
CLUSTER_GROUP_PREFIX = "quotaflow-"
ERROR_DATA_MAX_BYTES = 1024
RETRYABLE = frozenset({404, 408, 409, 429})


@dataclass(frozen=True)
class DeliverySpec:
    """`spec.delivery` of a KafkaSource."""

    retry: int
    backoff_policy: str  # exponential | linear
    backoff_delay_s: float

    def schedule_s(self) -> list[float]:
        """The pause before each retry: exponential doubles `backoffDelay` each time (0.5, 1,
        2, ...), linear multiplies it by the retry's number (0.5, 1, 1.5, ...)."""
        if self.backoff_policy == "exponential":
            return [self.backoff_delay_s * 2 ** n for n in range(self.retry)]
        return [self.backoff_delay_s * (n + 1) for n in range(self.retry)]


@dataclass(frozen=True)
class SourceSpec:
    """One KafkaSource: which step's function it feeds, from which topic (its event name, as
    `Settings.topic` takes it) and group, how it retries, and its dead-letter topic."""

    name: str
    step: str
    topic: str
    group: str  # without the cluster's `quotaflow-` prefix
    delivery: DeliverySpec
    dead_letter_topic: str  # event-topic name, as `topic`


def iso_duration_s(text: str) -> float:
    """An ISO-8601 duration of the kind `backoffDelay` takes (PT0.5S, PT2M, PT1H) in seconds."""
    m = re.fullmatch(r"PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?", text)
    if m is None or not any(m.groups()):
        raise ValueError(f"not an ISO-8601 duration of hours, minutes, seconds: {text!r}")
    h, mi, s = (float(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def _local(name: str, prefix: str) -> str:
    if not name.startswith(prefix):
        raise ValueError(f"{name!r} does not start with {prefix!r}")
    return name[len(prefix):]


def load_sources(sources_dir: Path = SOURCES_DIR, sinks: Path = SINKS) -> list[SourceSpec]:
    """Every KafkaSource in the manifests, with its dead-letter KafkaSink's topic."""
    sink_topics = {d["metadata"]["name"]: d["spec"]["topic"]
                   for d in yaml.safe_load_all(sinks.read_text()) if d}
    specs = []
    for path in sorted(sources_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "KafkaSource":
                continue
            spec, delivery = doc["spec"], doc["spec"]["delivery"]
            (topic,) = spec["topics"]
            specs.append(SourceSpec(
                name=doc["metadata"]["name"], step=path.stem,
                topic=_local(topic, CLUSTER_TOPIC_PREFIX),
                group=_local(spec["consumerGroup"], CLUSTER_GROUP_PREFIX),
                delivery=DeliverySpec(int(delivery["retry"]), delivery["backoffPolicy"],
                                      iso_duration_s(delivery["backoffDelay"])),
                dead_letter_topic=_local(sink_topics[delivery["deadLetterSink"]["ref"]["name"]],
                                         CLUSTER_TOPIC_PREFIX)))
    return specs


Headers = Sequence[tuple[str, bytes | str | None]]


def http_headers(record_headers: Headers | None) -> dict[str, str]:
    """The HTTP headers of a record's binary-mode CloudEvent: `ce_x` -> `ce-x` (the Kafka and
    HTTP bindings' prefixes), `content-type` kept; other Kafka headers are not forwarded."""
    out: dict[str, str] = {}
    for key, value in record_headers or []:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")
        if key.startswith("ce_"):
            out["ce-" + key[3:]] = text
        elif key.lower() == "content-type":
            out["Content-Type"] = text
    return out


def dead_letter_headers(record_headers: Headers | None, dest: str, code: int | None,
                        data: bytes) -> list[tuple[str, bytes]]:
    """The dead-lettered record's headers: the event's own, plus the `knativeerrordest`,
    `knativeerrorcode` (absent when the sink never answered) and `knativeerrordata`
    (base64 of the answer's first 1,024 bytes) extensions, in the Kafka binding (`ce_`)."""
    out = [(k, v if isinstance(v, bytes) else (v or "").encode())
           for k, v in record_headers or [] if not k.startswith("ce_knativeerror")]
    out.append(("ce_knativeerrordest", dest.encode()))
    if code is not None:
        out.append(("ce_knativeerrorcode", str(code).encode()))
    out.append(("ce_knativeerrordata",
                base64.b64encode(data[:ERROR_DATA_MAX_BYTES])))
    return out


def retryable(status: int | None) -> bool:
    """Whether a delivery answered `status` (None: no answer) is tried again."""
    return status is None or status >= 500 or status in RETRYABLE


@dataclass(frozen=True)
class Answer:
    """What one POST got: its status (None: no answer, e.g. the connection was refused) and
    body (or the error, when there was no answer)."""

    status: int | None
    body: bytes


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended: `delivered`, or the last answer for the dead-letter sink."""

    delivered: bool
    attempts: int
    last: Answer


class Stopped(Exception):
    """The delivery process is stopping: the record was neither delivered nor dead-lettered,
    its offset stays uncommitted and the group's next member delivers it again."""


def deliver(post: Callable[[], Answer], delivery: DeliverySpec,
            sleep: Callable[[float], Any], stopping: Callable[[], bool] = lambda: False
            ) -> Outcome:
    """POST until a 2xx, a status that is not retried, or the retries run out, pausing
    `delivery.schedule_s()` between tries; `Stopped` once `stopping()` is true between tries."""
    pauses = delivery.schedule_s()
    attempt = 0
    while True:
        answer = post()
        attempt += 1
        if answer.status is not None and 200 <= answer.status < 300:
            return Outcome(True, attempt, answer)
        if not retryable(answer.status) or attempt > len(pauses):
            return Outcome(False, attempt, answer)
        sleep(pauses[attempt - 1])
        if stopping():
            raise Stopped
