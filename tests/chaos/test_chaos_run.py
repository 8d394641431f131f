"""A small chaos run on the local stack (database `qf_test_chaos`, Redis db 8): 150 requests
from four tenants and a tenant with two teams (team limits below the sum of their keys'), with
resends and bad inputs, two faults of each kind (a function process SIGKILLed, the broker
killed, every PostgreSQL connection terminated, Redis flushed) and a price change halfway, and
nothing lost, billed twice, over a grant or a level's limit, priced at the wrong version or
leaked; each alert crossing arrives once, signed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from quotaflow.chaos.harness import ChaosConfig, run
from quotaflow.chaos.plan import HOSTILE_INPUTS, LEVELS_TENANT
from quotaflow.chaos.report import load_counts, table
from quotaflow.settings import Settings
from tests.services import pg_base, redis_base

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(400)
def test_a_small_chaos_run_loses_and_double_bills_nothing(tmp_path: Path) -> None:
    cfg = ChaosConfig(requests=150, tenants=4, concurrency=8, faults_per_kind=2, every_s=2.5,
                      seed=11, timeout_s=60, database="qf_test_chaos", redis_db=8,
                      state_dir=tmp_path / "stack")
    base = Settings(postgres_url=f"{pg_base()}/postgres", redis_url=f"{redis_base()}/0")
    started = time.monotonic()
    result = run(cfg, base, lambda _msg: None)
    elapsed = time.monotonic() - started

    assert result.ok, table(result)
    assert [f.kind for f in result.faults].count("kill") == 2
    assert len(result.faults) == 8
    load = load_counts(result.outcomes)
    assert load["requests accepted"] > 85  # of 150: 20 bad inputs, 5 hostile clients, resends
    assert load["hostile clients"] == len(HOSTILE_INPUTS)
    assert result.snapshot.requests, "no request was recorded"
    levels = [e for e in result.snapshot.ledger if e.tenant == LEVELS_TENANT]
    reserved_at = {e.price_version for e in levels if e.kind == "TokensReserved"}
    assert reserved_at == {1, 2}, table(result)  # the price changed under load
    assert any(e.kind == "RequestRejected" for e in levels), "no level ever refused"
    receipts = result.snapshot.receipts or []
    # Alerts on team ops and key ml-0 crossed; each was refused once by the receiver and
    # retried under its webhook-id (the checks found one id per crossing, every one signed).
    assert len({r.webhook_id for r in receipts}) >= 2, table(result)
    assert len(receipts) >= 2 * len({r.webhook_id for r in receipts})
    assert elapsed < 180, f"the run took {elapsed:.0f} s"
