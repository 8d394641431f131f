"""`quotaflow dev up` in the foreground stops its whole stack on SIGINT and on SIGTERM, also
when a script started it in the background: a non-interactive shell starts a background job
with SIGINT ignored, and a `kill -INT` then did nothing. Database `qf_test_dev_signals`, Redis
db index 7."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quotaflow.devstack.process import free_port, pid_alive, stop_pids
from tests.services import fresh_database, redis_base

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def ignore_sigint() -> None:
    """What a shell does to a job it starts in the background with no job control."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stack_started_in_the_background_stops_on_the_signal_with_all_its_processes(
        tmp_path: Path, sig: signal.Signals) -> None:
    env = {**os.environ, "POSTGRES_URL": fresh_database("qf_test_dev_signals"),
           "REDIS_URL": f"{redis_base()}/7", "QF_KAFKA_SESSION_TIMEOUT_MS": "2000"}
    state = tmp_path / "dev"
    proc = subprocess.Popen(
        [sys.executable, "-m", "quotaflow", "dev", "up", "--model", "standin", "--state-dir",
         str(state), "--port", str(free_port()), "--kafka-port", str(free_port())],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=ignore_sigint)
    pids: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "serving" in line:
                break
        pids = json.loads((state / "state.json").read_text())["pids"]
        proc.send_signal(sig)
        assert proc.wait(60) in (0, 130)
        deadline = time.monotonic() + 15
        while any(pid_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [n for n, p in pids.items() if pid_alive(p)]
    finally:  # whatever happened, leave no process of this stack behind
        proc.kill()
        proc.wait(10)
        stop_pids(pids)
