"""Chaos on the local pipeline: a step killed with SIGKILL mid-stream (between its PostgreSQL
commit and its offset commit, or anywhere else) and restarted changes no bill."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from quotaflow import client
from quotaflow.adapters import postgres as db
from quotaflow.devstack.stack import DevStack
from tests.e2e.test_pipeline import new_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("victim", ["reserve", "settle"])
def test_step_killed_mid_stream_and_restarted_charges_every_request_exactly_once(
        stack: DevStack, victim: str) -> None:
    tenant, key = new_tenant(stack, 100_000)
    n = 40
    with ThreadPoolExecutor(8) as pool:
        # Kill while requests are still arriving, so the victim dies with work in flight.
        pending = pool.map(lambda i: client.submit(
            stack.admit_url, key, {"model": stack.settings.model_name,
                                   "prompt": f"request number {i}", "max_tokens": 4},
            event_id=f"chaos-{victim}-{i}"), range(n))
        time.sleep(0.15)
        stack.kill(victim)
        accepted = list(pending)
        stack.respawn(victim)
        results = list(pool.map(lambda a: client.wait(stack.admit_url, key, a["request_id"],
                                                      timeout_s=90), accepted))
    assert [r["status"] for r in results] == ["completed"] * n
    with db.connect(stack.settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT kind, count(*), count(DISTINCT request_id), coalesce(sum(amount), 0) "
            "FROM ledger_events WHERE tenant_id = %s GROUP BY kind", (tenant,)).fetchall()
    by_kind = {k: (count, distinct, total) for k, count, distinct, total in rows}
    assert by_kind["TokensReserved"][:2] == (n, n)  # one reservation per request, no more
    assert by_kind["ReservationSettled"][:2] == (n, n)  # each ended exactly once
    charged = sum(r["usage"]["charged_tokens"] for r in results)  # type: ignore[index]
    assert by_kind["ReservationSettled"][2] == charged
    quota = client.quota(stack.admit_url, key)
    assert (quota["spent"], quota["reserved"]) == (charged, 0)
