"""`quotaflow dev scale STEP N` on a stack started with `dev up --detach --replicas 2`: a member
joins the step's group and is handed partitions, then two leave gracefully and are not started
again; a count beyond the topics' partitions is refused. One Apache Kafka node (the group
protocol is the same on three). Database `qf_test_dev_scale`, Redis db index 3."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quotaflow.devstack.process import free_port, pid_alive, stop_pids
from tests.services import fresh_database, redis_base, session_broker

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(session_broker() != "kafka",
                                 reason="scaling needs Apache Kafka: Tansu's topics have one "
                                 "partition")]
REPO = Path(__file__).resolve().parents[2]


def dev(state: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quotaflow", "dev", *args, "--state-dir",
                           str(state)], cwd=REPO, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=300)


def pids(state: Path) -> dict[str, int]:
    found: dict[str, int] = json.loads((state / "state.json").read_text())["pids"]
    return found


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "dev"
    env = {**os.environ, "POSTGRES_URL": fresh_database("qf_test_dev_scale"),
           "REDIS_URL": f"{redis_base()}/3", "QF_KAFKA_SESSION_TIMEOUT_MS": "2000"}
    up = dev(state, "up", "--detach", "--broker", "kafka", "--brokers", "1", "--replicas", "2",
             "--model",
             "standin", "--port", str(free_port()), "--kafka-port", str(free_port()), env=env)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield state
    finally:
        left = pids(state) if (state / "state.json").exists() else {}
        dev(state, "down")
        stop_pids(left)


def test_members_join_and_leave_a_running_stack_on_request(stack_dir: Path) -> None:
    assert [n for n in pids(stack_dir) if n.startswith("reserve")] == ["reserve-1", "reserve-2"]
    grown = dev(stack_dir, "scale", "reserve", "3")
    assert grown.returncode == 0, grown.stderr
    assert "reserve: reserve-1, reserve-2, reserve-3" in grown.stderr
    # The new member is handed partitions of its group (its log says so).
    log = stack_dir / "logs" / "reserve-3.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and re.search(r"step reserve assigned [1-9]", log.read_text())):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.5)

    before = pids(stack_dir)
    shrunk = dev(stack_dir, "scale", "reserve", "1")
    assert shrunk.returncode == 0, shrunk.stderr
    assert not pid_alive(before["reserve-3"]) and not pid_alive(before["reserve-2"])
    time.sleep(2)  # the supervisor would have started them again by now
    assert [n for n in pids(stack_dir) if n.startswith("reserve")] == ["reserve-1"]
    assert pid_alive(pids(stack_dir)["reserve-1"])

    refused = dev(stack_dir, "scale", "reserve", "7")
    assert refused.returncode == 1 and "6 partitions in this stack" in refused.stderr
