"""Supervision of the local stack, as `quotaflow dev up` runs it: a step killed with SIGKILL and a
killed broker (an Apache Kafka node keeps its log; Tansu comes back empty) are restarted by the
stack itself, requests sent afterwards complete, `dev status` counts the restarts, and a second `dev
up` while the stack runs says so and changes nothing. Database `qf_test_restarts`, Redis db index
6."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quotaflow import client
from quotaflow.adapters import kafka
from quotaflow.devstack.process import pid_alive
from quotaflow.devstack.stack import DevStack
from quotaflow.events.catalog import topic_specs
from tests.e2e.conftest import start_stack
from tests.e2e.test_pipeline import new_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    s = start_stack(tmp_path_factory.mktemp("restarts"), database="qf_test_restarts",
                    redis_db=6)
    yield s
    s.down()


def complete(stack: DevStack, key: str, n: int, tag: str, timeout_s: float = 120) -> None:
    """Send `n` requests (retrying while admit answers 503) and wait for each to complete."""
    deadline = time.monotonic() + timeout_s
    ids = []
    for i in range(n):
        while True:
            try:
                accepted = client.submit(
                    stack.admit_url, key, {"model": stack.settings.model_name,
                                           "prompt": f"{tag} {i}", "max_tokens": 4},
                    event_id=f"{tag}-{i}")
                break
            except (client.ApiError, OSError):
                assert time.monotonic() < deadline, f"admit refused {tag}-{i} until the end"
                time.sleep(0.5)
        ids.append(accepted["request_id"])
    for rid in ids:
        result = client.wait(stack.admit_url, key, rid,
                             timeout_s=max(1.0, deadline - time.monotonic()))
        assert result["status"] == "completed", result


def wait_restarted(stack: DevStack, name: str, old_pid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = stack.procs[name]
        if proc.pid != old_pid and proc.poll() is None:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} was not restarted within {timeout_s} s")


def test_a_killed_step_comes_back_by_itself_and_requests_complete(stack: DevStack) -> None:
    _, key = new_tenant(stack, 100_000)
    complete(stack, key, 3, "before")
    old = stack.procs["infer"].pid
    stack.kill("infer")
    wait_restarted(stack, "infer", old)
    assert stack.restarts["infer"] >= 1
    complete(stack, key, 10, "after-infer")


def partition_counts(stack: DevStack) -> dict[str, int]:
    """Partitions of each declared topic (dead-letter topics included) on the stack's broker."""
    topics = kafka.admin_client(stack.settings).list_topics(timeout=30).topics
    return {spec.name: len(topics[stack.settings.topic(spec.name)].partitions)
            for spec in topic_specs()}


def test_a_killed_broker_comes_back_with_its_topics_and_requests_complete(
        stack: DevStack) -> None:
    _, key = new_tenant(stack, 100_000)
    # One consumer a step: the stack's topics have one partition each, not the cluster's six.
    assert set(partition_counts(stack).values()) == {stack.partitions} == {1}
    # A node of the Apache Kafka cluster (the last: not the one on --kafka-port), or Tansu.
    broker = stack.kafka.names[-1]
    old = stack.procs[broker].pid
    stack.kill(broker)
    wait_restarted(stack, broker, old, timeout_s=60)
    assert stack.restarts[broker] >= 1
    complete(stack, key, 10, "after-broker", timeout_s=180)
    assert set(partition_counts(stack).values()) == {1}  # created again as they were
    assert all(p.poll() is None for p in stack.procs.values())


def quotaflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quotaflow", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **stack_env()})


def stack_env() -> dict[str, str]:
    return {"QF_MODEL_SOURCE": "standin"}


def test_status_counts_restarts_and_a_second_up_changes_nothing(stack: DevStack) -> None:
    old = stack.procs["record"].pid
    stack.kill("record")
    wait_restarted(stack, "record", old)
    state_file = stack.state_dir / "state.json"
    before = state_file.read_text()
    status = quotaflow("dev", "status", "--state-dir", str(stack.state_dir))
    assert status.returncode == 0, status.stderr
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("record "))
    assert "running" in line and f"restarts {stack.restarts['record']}" in line
    again = quotaflow("dev", "up", "--state-dir", str(stack.state_dir), "--model", "standin",
                      "--port", str(stack.admit_port))
    assert again.returncode != 0
    assert "already running" in again.stderr
    assert state_file.read_text() == before
    assert all(pid_alive(p.pid) and p.poll() is None for p in stack.procs.values())
