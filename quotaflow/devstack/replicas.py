"""`dev up --replicas N`: each consumer step as N members of its group, processes `reserve-1` ...
`reserve-N`, on topics with their declared partitions (kafka/topics.yaml). Apache Kafka only:
the Tansu stack's topics have one partition each, so a second member would idle. Members join
and leave a running stack in `members`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from quotaflow.devstack.brokers import LocalBroker
from quotaflow.devstack.process import DevStackError, wait_for
from quotaflow.events.catalog import topic_specs
from quotaflow.runtime.steps import CONSUMER_STEPS


def step_names(step: str, replicas: int) -> list[str]:
    """The processes of consumer step `step`: `step`, or `step-1` ... `step-N`."""
    return [step] if replicas <= 1 else [f"{step}-{i}" for i in range(1, replicas + 1)]


def members(steps: Iterable[str], replicas: int) -> list[tuple[str, str]]:
    """(step, process name) of every member of every step in `steps`."""
    return [(step, name) for step in steps for name in step_names(step, replicas)]


def partitions(broker: LocalBroker | None, replicas: int, default: int) -> int:
    """The partitions a topic of the stack gets: `default`, or with several members a step
    0 (each topic's declared count); refused on Tansu."""
    if replicas <= 1:
        return default
    if broker is None or broker.kind != "kafka":
        raise DevStackError("--replicas needs Apache Kafka (--broker kafka): the Tansu stack's "
                            "topics have one partition each")
    fewest = min(t.partitions for t in topic_specs())
    if replicas > fewest:
        raise DevStackError(f"--replicas {replicas}: the topics have {fewest} partitions "
                            "(kafka/topics.yaml), so members beyond that would idle")
    return 0


def wait_assigned(logs: Path, procs: dict[str, subprocess.Popen[bytes]], replicas: int,
                  timeout_s: float) -> None:
    """Wait until every member of every consumer step is ready: its group handed it
    partitions (its log says so), not merely subscribed."""
    for step, name in members(CONSUMER_STEPS, replicas):
        path = logs / f"{name}.log"
        wait_for(f"step {name}", lambda p=path, s=step:  # type: ignore[misc]
                 p.exists() and f"step {s} assigned" in p.read_text(errors="replace"),
                 timeout_s, procs[name], path)

