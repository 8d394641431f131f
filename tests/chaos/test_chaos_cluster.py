"""Chaos on a 3-node Apache Kafka cluster (RF 3, min ISR 2): the node leading the busiest
partition SIGKILLed, then paused (SIGSTOP for a few seconds, SIGCONT), one node down at a time,
under a few hundred requests. Nothing lost, billed twice, over a grant or leaked, the audit
clean, and every send answered 202 or 4xx within the client's retries: no 503 left."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from quotaflow.chaos.harness import ChaosConfig, run
from quotaflow.chaos.report import load_counts, table
from quotaflow.settings import Settings
from tests.services import pg_base, redis_base, session_broker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(400)
def test_broker_kills_and_pauses_on_a_cluster_leave_no_send_unanswered(tmp_path: Path) -> None:
    if session_broker() != "kafka":
        pytest.skip("needs Apache Kafka (Java 17+ and its jars): the faults are a cluster's")
    cfg = ChaosConfig(requests=240, tenants=4, concurrency=8, faults=("broker", "broker-pause"),
                      faults_per_kind=2, every_s=5.0, seed=25, timeout_s=60,
                      database="qf_test_chaos_cluster", redis_db=9,
                      # The levels tenant's checks run in test_chaos_run and _replicas; here
                      # the broker faults alone, within the time bound below.
                      state_dir=tmp_path / "stack", levels=False)
    base = Settings(postgres_url=f"{pg_base()}/postgres", redis_url=f"{redis_base()}/0")
    started = time.monotonic()
    result = run(cfg, base, lambda _msg: None)
    elapsed = time.monotonic() - started

    assert result.ok, table(result)
    assert sorted(f.kind for f in result.faults) == ["broker", "broker", "broker-pause",
                                                     "broker-pause"]
    assert all(f.note.startswith(("SIGKILL kafka-", "SIGSTOP kafka-")) for f in result.faults), \
        [f.note for f in result.faults]
    load = load_counts(result.outcomes)
    assert load["left at 503"] == 0 and load["unanswered"] == 0, table(result)
    assert load["requests accepted"] > 150
    assert elapsed < 180, f"the run took {elapsed:.0f} s"
