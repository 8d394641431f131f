"""The event catalog: every event type, its CloudEvents type, its topic and its Avro schema
version, declared once. Topics come from kafka/topics.yaml; schemas from schemas/<name>/vN.avsc."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from quotaflow.events.resources import data_path

REQUESTED_TYPE = "dev.quotaflow.inference.requested"
SWEEP_TYPE = "dev.quotaflow.quota.sweep"
# What Knative's PingSource sends (its type cannot be changed): also a sweep trigger.
PING_TYPE = "dev.knative.sources.ping"


@dataclass(frozen=True)
class EventType:
    name: str  # also the Avro schema directory and the logical topic
    ce_type: str
    topic: str  # logical topic name, prefixed by Settings.topic_prefix
    version: int  # the version this code writes

    @property
    def dataschema(self) -> str:
        return dataschema_uri(self.name, self.version)


def dataschema_uri(name: str, version: int) -> str:
    """The `ce_dataschema` naming the exact writer schema `schemas/<name>/v<version>.avsc`."""
    return f"urn:quotaflow:schema:{name}:v{version}"


def parse_dataschema(uri: str) -> tuple[str, int]:
    parts = uri.split(":")
    if (len(parts) != 5 or parts[:3] != ["urn", "quotaflow", "schema"]
            or not parts[4].startswith("v")):
        raise ValueError(f"dataschema {uri!r} is not urn:quotaflow:schema:<name>:v<N>")
    try:
        return parts[3], int(parts[4][1:])
    except ValueError:
        raise ValueError(f"dataschema {uri!r} has no integer version") from None


_EVENTS = [
    EventType("admitted", "dev.quotaflow.request.admitted", "admitted", 2),
    EventType("estimated", "dev.quotaflow.request.estimated", "estimated", 2),
    EventType("reserved", "dev.quotaflow.request.reserved", "reserved", 2),
    EventType("rejected", "dev.quotaflow.request.rejected", "rejected", 2),
    EventType("completed", "dev.quotaflow.request.completed", "completed", 2),
    EventType("failed", "dev.quotaflow.request.failed", "failed", 1),
    EventType("settled", "dev.quotaflow.request.settled", "settled", 1),
    EventType("recorded", "dev.quotaflow.request.recorded", "recorded", 1),
    EventType("ledger", "dev.quotaflow.ledger.entry", "ledger", 2),
]

EVENTS: dict[str, EventType] = {e.name: e for e in _EVENTS}
BY_CE_TYPE: dict[str, EventType] = {e.ce_type: e for e in _EVENTS}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replicas: int
    retention_ms: int
    dead_letter: bool = False


@cache
def _topics_doc() -> dict[str, Any]:
    with data_path("topics.yaml").open() as f:
        doc: dict[str, Any] = yaml.safe_load(f)
    return doc


def dead_letter_suffix() -> str:
    return str(_topics_doc()["dead_letter"]["suffix"])


def topic_specs() -> list[TopicSpec]:
    """Every topic and its dead-letter topic, unprefixed, from kafka/topics.yaml."""
    doc = _topics_doc()
    defaults, dlq = doc["defaults"], doc["dead_letter"]
    specs: list[TopicSpec] = []
    for name, over in doc["topics"].items():
        merged = {**defaults, **(over or {})}
        base = TopicSpec(name, int(merged["partitions"]), int(merged["replicas"]),
                         int(merged["retention_ms"]))
        specs.append(base)
        specs.append(TopicSpec(name + dlq["suffix"], base.partitions, base.replicas,
                               int(dlq["retention_ms"]), dead_letter=True))
    return specs
