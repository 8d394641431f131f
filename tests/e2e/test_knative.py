"""The pipeline in the Knative shape (`quotaflow dev up --knative`): every step its Knative
function under func-python's middleware, fed by the local KafkaSource (binary CloudEvents,
ordered, retries, the dead-letter sink), scaled to zero when idle."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from quotaflow import client
from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.devstack import knative_mode
from quotaflow.devstack.stack import DevStack
from quotaflow.events.catalog import EVENTS
from quotaflow.ledger.commands import ReserveTokens
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from tests.conftest import REPO
from tests.e2e.conftest import start_stack
from tests.e2e.test_pipeline import new_tenant, read_topic
from tests.e2e.test_resend import audit

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
IDLE_S = 12  # long enough that a burst keeps its functions warm on a loaded machine


@pytest.fixture(scope="module")
def kstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    s = start_stack(tmp_path_factory.mktemp("knative"), database="qf_test_knative", redis_db=3,
                    knative=True, knative_idle_s=IDLE_S)
    yield s
    s.down()


def functions(stack: DevStack) -> dict[str, dict[str, Any]]:
    state = knative_mode.read_state(stack.state_dir) or {"functions": []}
    return {fn["name"]: fn for fn in state["functions"]}


def ask(stack: DevStack, key: str, prompt: str, event_id: str | None = None) -> dict[str, Any]:
    accepted = client.submit(stack.admit_url, key, {"model": stack.settings.model_name,
                                                    "prompt": prompt, "max_tokens": 4},
                             event_id=event_id)
    return client.wait(stack.admit_url, key, str(accepted["request_id"]), timeout_s=120)


def test_request_through_the_knative_functions_completes_and_is_charged_exactly(
        kstack: DevStack) -> None:
    _, key = new_tenant(kstack, 1000)
    result = ask(kstack, key, "the quick brown fox")
    assert result["status"] == "completed", result
    assert result["usage"]["charged_tokens"] == 5 + 4
    quota = client.quota(kstack.admit_url, key)
    assert (quota["reserved"], quota["spent"]) == (0, 9)
    # Every step ran as its function, started by its first delivery (record's may still be
    # under way: the status is read from the ledger's side before record has run).
    deadline = time.monotonic() + 30
    while not all(fn["cold_starts"] >= 1 for fn in functions(kstack).values()):
        assert time.monotonic() < deadline, functions(kstack)
        time.sleep(0.2)
    assert set(functions(kstack)) == {"estimate", "reserve", "infer", "settle", "record"}


@pytest.fixture(scope="module")
def stack(kstack: DevStack) -> DevStack:
    """The pipeline suite's tests below, imported, run on this mode's stack."""
    return kstack


# Run here right after the first request warmed every function: the pipeline suite waits 60 s.
from tests.e2e.test_pipeline import (  # noqa: E402
    test_committed_ledger_events_reach_the_ledger_topic,  # noqa: F401
    test_tenant_whose_grant_is_too_small_is_rejected_and_charged_nothing,  # noqa: F401
)


def test_a_burst_ends_every_request_once_and_the_audit_is_clean(kstack: DevStack) -> None:
    tenant, key = new_tenant(kstack, 100_000)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: ask(kstack, key, f"burst number {i}"), range(16)))
    assert [r["status"] for r in results] == ["completed"] * 16
    result = audit(kstack, tenant)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_function_killed_mid_run_is_started_again_and_nothing_is_lost_or_billed_twice(
        kstack: DevStack) -> None:
    tenant, key = new_tenant(kstack, 100_000)
    n = 12
    with ThreadPoolExecutor(8) as pool:
        pending = pool.map(lambda i: client.submit(
            kstack.admit_url, key, {"model": kstack.settings.model_name,
                                    "prompt": f"chaos number {i}", "max_tokens": 4}), range(n))
        deadline = time.monotonic() + 60
        while functions(kstack)["reserve"]["state"] != "ready":  # serving the burst
            assert time.monotonic() < deadline, functions(kstack)
            time.sleep(0.05)
        victim = functions(kstack)["reserve"]
        os.kill(victim["pid"], signal.SIGKILL)  # a pod lost with deliveries in flight
        accepted = list(pending)
        results = list(pool.map(lambda a: client.wait(kstack.admit_url, key, a["request_id"],
                                                      timeout_s=120), accepted))
    assert [r["status"] for r in results] == ["completed"] * n
    assert functions(kstack)["reserve"]["pid"] != victim["pid"]
    with db.connect(kstack.settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT kind, count(*), count(DISTINCT request_id) FROM ledger_events "
            "WHERE tenant_id = %s GROUP BY kind", (tenant,)).fetchall()
    by_kind = {k: (count, distinct) for k, count, distinct in rows}
    assert by_kind["TokensReserved"] == (n, n)
    assert by_kind["ReservationSettled"] == (n, n)
    result = audit(kstack, tenant)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_record_the_function_refuses_is_dead_lettered_and_its_request_ends_failed_released(
        kstack: DevStack) -> None:
    s = kstack.settings
    tenant, _key = new_tenant(kstack, 1000)
    rid = str(uuid.uuid4())
    # A request reserved an hour ago whose `reserved` record infer cannot decode: the function
    # answers 400, which KafkaSource does not retry.
    with db.connect(s.postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
                     "payload_hash, status, model) VALUES (%s, %s, 'k', '/s', %s, 'h', "
                     "'reserved', %s)", (rid, tenant, rid, s.model_name))
        PostgresLedger(conn).reserve([ReserveTokens(tenant, rid, 40, "h")])
        conn.execute("UPDATE requests SET created_at = now() - interval '1 hour', "
                     "updated_at = now() - interval '1 hour' WHERE request_id = %s", (rid,))
        RedisProjection.connect(s.redis_url).catch_up(PostgresLedger(conn))
    event_id = f"{rid}/reserved"
    producer = Producer(kafka.client_config(s, {}))
    producer.produce(s.topic("reserved"), value=b"\xff not avro", key=tenant.encode(), headers=[
        ("ce_specversion", b"1.0"), ("ce_id", event_id.encode()),
        ("ce_source", b"/quotaflow/reserve"), ("ce_type", EVENTS["reserved"].ce_type.encode()),
        ("content-type", b"application/avro")])
    producer.flush(10)

    dead = [m for m in read_topic(kstack, s.topic("reserved") + ".dlq", 1, timeout_s=60)
            if dict(m.headers())["ce_id"] == event_id.encode()]  # type: ignore[attr-defined]
    assert dead, "nothing on the dead-letter topic"
    headers = dict(dead[0].headers())  # type: ignore[attr-defined]
    assert headers["ce_knativeerrordest"] == (functions(kstack)["infer"]["url"] + "/").encode()
    assert headers["ce_knativeerrorcode"] == b"400"
    assert b"Undecodable" in base64.b64decode(headers["ce_knativeerrordata"])
    assert dead[0].value() == b"\xff not avro"  # type: ignore[attr-defined]

    # Nothing moves it on; the reconciler (settle, on PingSource's sweep) ends it past its
    # deadline: failed, its reservation released.
    deadline = time.monotonic() + 60
    while True:
        with db.connect(s.postgres_url) as conn:
            row = conn.execute("SELECT status FROM requests WHERE request_id = %s",
                               (rid,)).fetchone()
            kinds = [k for (k,) in conn.execute(
                "SELECT kind FROM ledger_events WHERE request_id = %s ORDER BY seq", (rid,))]
        if row and row[0] == "failed":
            break
        assert time.monotonic() < deadline, (row, kinds)
        time.sleep(0.5)
    assert kinds == ["TokensReserved", "ReservationReleased"]


def test_an_idle_function_is_scaled_to_zero_and_started_again_by_its_next_delivery(
        kstack: DevStack) -> None:
    _, key = new_tenant(kstack, 1000)
    assert ask(kstack, key, "wake every step")["status"] == "completed"
    deadline = time.monotonic() + IDLE_S + 30
    while functions(kstack)["estimate"]["state"] != "scaled-to-zero":
        assert time.monotonic() < deadline, functions(kstack)["estimate"]
        time.sleep(0.2)
    before = functions(kstack)["estimate"]["cold_starts"]
    status = subprocess.run([sys.executable, "-m", "quotaflow", "dev", "status", "--json",
                             "--state-dir", str(kstack.state_dir)], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    shown = {f["name"]: f["state"] for f in json.loads(status.stdout)["functions"]}
    assert shown["estimate"] == "scaled-to-zero", status.stdout
    assert ask(kstack, key, "wake estimate again")["status"] == "completed"
    assert functions(kstack)["estimate"]["cold_starts"] > before  # started by the delivery


def test_a_function_served_this_way_runs_sixteen_requests_at_once(tmp_path: Path) -> None:
    """The concurrency test of tests/deploy, on the probe started as this mode starts a
    function: by a delivery, through `FunctionProcess`."""
    from quotaflow.devstack.knative_functions import FunctionProcess
    from quotaflow.devstack.process import free_port
    from tests.deploy import knative_probe

    argv = [sys.executable, "-c", "from func_python.http import serve; "
            "from tests.deploy.knative_probe import new; serve(new)"]
    fn = FunctionProcess("probe", free_port(), {"PYTHONPATH": str(REPO),
                                                "PROBE_DIR": str(tmp_path)},
                         tmp_path, idle_s=60, argv=argv)

    def slow(_: int) -> int:
        fn.acquire()
        try:
            req_url = fn.url + "/slow"
            import urllib.request

            with urllib.request.urlopen(urllib.request.Request(
                    req_url, data=b"{}", method="POST"), timeout=60) as r:
                most: int = json.load(r)["most"]
                return most
        finally:
            fn.release()

    try:
        with ThreadPoolExecutor(knative_probe.PEERS) as pool:
            seen = list(pool.map(slow, range(knative_probe.PEERS)))
    finally:
        fn.stop()
    assert max(seen) == knative_probe.PEERS
    assert len(fn.cold_starts_s) == 1  # one instance, started by the first delivery
