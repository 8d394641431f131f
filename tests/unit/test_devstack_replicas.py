"""`dev up --replicas N`: a consumer step's processes, the broker and partitions it needs, and
members joining and leaving a running stack."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from quotaflow.devstack import members, replicas
from quotaflow.devstack.brokers import LocalBroker
from quotaflow.devstack.process import DevStackError
from quotaflow.events.catalog import topic_specs


def test_a_step_runs_under_its_own_name_or_as_numbered_members() -> None:
    assert replicas.step_names("reserve", 1) == ["reserve"]
    assert replicas.step_names("reserve", 3) == ["reserve-1", "reserve-2", "reserve-3"]
    assert replicas.members(["estimate", "reserve"], 2) == [
        ("estimate", "estimate-1"), ("estimate", "estimate-2"),
        ("reserve", "reserve-1"), ("reserve", "reserve-2")]


def test_members_get_the_declared_partitions_on_apache_kafka_only() -> None:
    assert replicas.partitions(None, 1, 1) == 1
    with pytest.raises(DevStackError, match="needs Apache Kafka"):
        replicas.partitions(None, 2, 1)


def test_more_members_than_the_topics_partitions_are_refused() -> None:
    kafka = LocalBroker("kafka", 0, 3, Path("unused"), Path("unused"), spawn=_no_spawn)
    fewest = min(t.partitions for t in topic_specs())
    assert replicas.partitions(kafka, fewest, 1) == 0  # each topic's declared count
    with pytest.raises(DevStackError, match=f"the topics have {fewest} partitions"):
        replicas.partitions(kafka, fewest + 1, 1)


def _no_spawn(name: str, argv: list[str], append: bool) -> subprocess.Popen[bytes]:
    raise AssertionError("nothing is started")


@dataclass
class FakeStack:
    """The parts of a DevStack that join and leave use, with `sleep` for members."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    kafka: None = None
    states: int = 0

    def start_process(self, name: str, function: str) -> None:
        self.procs[name] = subprocess.Popen(["sleep", "60"], start_new_session=True)

    def write_state(self) -> None:
        self.states += 1


def test_a_member_joins_under_the_first_free_number_and_leaves_gracefully_never_the_last(
        ) -> None:
    stack = FakeStack()
    try:
        stack.start_process("reserve-1", "reserve")
        stack.start_process("infer", "infer")
        joined = members.join(stack, "reserve")  # type: ignore[arg-type]
        assert joined == "reserve-2" and stack.procs[joined].poll() is None
        proc = stack.procs[joined]
        assert members.leave(stack, "reserve") == "reserve-2"  # type: ignore[arg-type]
        # Out of the stack (its supervisor never restarts it) and stopped by SIGTERM.
        assert "reserve-2" not in stack.procs and proc.returncode == -signal.SIGTERM
        assert members.leave(stack, "reserve") is None  # type: ignore[arg-type]
        assert members.leave(stack, "infer") is None  # type: ignore[arg-type]
        assert stack.procs["reserve-1"].poll() is None and stack.states == 2
    finally:
        for p in stack.procs.values():
            p.kill()
            p.wait()
