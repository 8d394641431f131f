"""Scale out on the 3-node Apache Kafka cluster: every consumer step runs as two members of its
group (`--replicas 2`: reserve-1, reserve-2, ...; topics with their declared partitions), and
members are SIGKILLed mid-run. The group hands a dead member's partitions to the other: nothing
lost, billed twice, over a grant or leaked, and the audit clean."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from quotaflow.chaos.harness import ChaosConfig, run
from quotaflow.chaos.plan import FUNCTIONS
from quotaflow.chaos.report import load_counts, table
from quotaflow.settings import Settings
from tests.services import pg_base, redis_base, session_broker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(400)
def test_killing_members_of_replicated_steps_loses_nothing(tmp_path: Path) -> None:
    if session_broker() != "kafka":
        pytest.skip("needs Apache Kafka (Java 17+ and its jars): Tansu's topics have one "
                    "partition")
    cfg = ChaosConfig(requests=200, tenants=4, concurrency=8, faults=("kill",),
                      faults_per_kind=4, every_s=4.0, seed=4, timeout_s=60,
                      database="qf_test_chaos_replicas", redis_db=10,
                      state_dir=tmp_path / "stack", replicas=2)
    base = Settings(postgres_url=f"{pg_base()}/postgres", redis_url=f"{redis_base()}/0")
    started = time.monotonic()
    result = run(cfg, base, lambda _msg: None)
    elapsed = time.monotonic() - started

    assert result.ok, table(result)
    assert len(result.faults) == 4
    steps = set(FUNCTIONS) - {"admit"}
    killed = [f.note.split()[1] for f in result.faults if f.note.startswith("SIGKILL")]
    assert killed, [f.note for f in result.faults]
    # A step's fault killed one member of its group, never a process of the plain name.
    assert all(n == "admit" or (n.rsplit("-", 1)[0] in steps and n[-2:] in ("-1", "-2"))
               for n in killed), killed
    assert all(result.config["restarts"].get(n, 0) >= 1 for n in killed), result.config
    load = load_counts(result.outcomes)
    assert load["requests accepted"] > 100 and load["left at 503"] == 0
    assert elapsed < 180, f"the run took {elapsed:.0f} s"
