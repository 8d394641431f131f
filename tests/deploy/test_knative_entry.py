"""The Knative entry (`quotaflow.runtime.knative.KnativeFunction`, what `function.new()`
returns) over ASGI: honest readiness before start-up, settle taking the PingSource sweep
exactly as PingSource delivers it, and under func-python's real middleware (hypercorn) as many
requests at once as Knative lets in, and a client's hang-up closing the response (the door's
cancel path)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from quotaflow.adapters import kafka
from quotaflow.devstack.process import free_port, http_ok, wait_for
from quotaflow.runtime.knative import KnativeFunction
from quotaflow.settings import Settings
from tests.conftest import REPO
from tests.deploy import knative_probe
from tests.services import fresh_database, redis_base


def call(fn: KnativeFunction, method: str, path: str, headers: dict[str, str],
         body: bytes = b"") -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8080),
             "client": ("127.0.0.1", 40000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await asyncio.Event().wait()  # as a server does: the client stays until the answer
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(fn.handle(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_function_is_not_ready_and_answers_503_before_start() -> None:
    fn = KnativeFunction("settle")
    assert fn.ready() == (False, "starting")
    assert fn.alive()[0]
    status, body = call(fn, "POST", "/", {"ce-type": "dev.knative.sources.ping"})
    assert status == 503
    assert json.loads(body)["status"] == 503


def test_settle_function_takes_the_pingsource_sweep_delivery(kafka_bootstrap: str) -> None:
    settings = replace(Settings(), kafka_bootstrap=kafka_bootstrap,
                       topic_prefix=f"p{uuid.uuid4().hex[:6]}.",
                       postgres_url=fresh_database("qf_test_deploy_ping"),
                       redis_url=f"{redis_base()}/11")
    kafka.create_topics(settings)
    fn = KnativeFunction("settle")
    fn.start(settings.as_env())
    try:
        deadline = time.monotonic() + 30
        while not fn.ready()[0]:
            assert time.monotonic() < deadline, fn.ready()
            time.sleep(0.1)
        # Binary mode, as knative's PingSource (v1) sends its fixed payload.
        headers = {"ce-specversion": "1.0", "ce-type": "dev.knative.sources.ping",
                   "ce-source": "/apis/v1/namespaces/quotaflow/pingsources/quotaflow-sweep",
                   "ce-id": str(uuid.uuid4()), "ce-time": "2026-11-22T17:00:00Z",
                   "content-type": "application/json"}
        status, body = call(fn, "POST", "/", headers, b'{"sweep": "reservations"}')
        assert status == 200, body
        assert json.loads(body) == {"produced": []}
        status, _ = call(fn, "GET", "/health/readiness", {})
        assert status == 200
    finally:
        fn.stop()


def test_all_in_one_function_runs_admit_and_every_step_and_stops_them(
        kafka_bootstrap: str) -> None:
    settings = replace(Settings(), kafka_bootstrap=kafka_bootstrap,
                       topic_prefix=f"a{uuid.uuid4().hex[:6]}.",
                       postgres_url=fresh_database("qf_test_deploy_all"),
                       redis_url=f"{redis_base()}/11", model_source="standin")
    kafka.create_topics(settings)
    fn = KnativeFunction("all")
    fn.start(settings.as_env())
    try:
        deadline = time.monotonic() + 30
        while not fn.ready()[0]:
            assert time.monotonic() < deadline, fn.ready()
            time.sleep(0.1)
        status, _ = call(fn, "GET", "/health/readiness", {})
        assert status == 200
        status, body = call(fn, "GET", "/v1/quota", {})
        assert status == 401, body
    finally:
        fn.stop()
    assert not fn.ready()[0]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """tests/deploy/knative_probe.py served by func-python's middleware, as a pod serves
    `function.new()`: its base URL and the folder it reports hang-ups in."""
    folder = tmp_path_factory.mktemp("probe")
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "PROBE_DIR": str(folder),
           "LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    log = folder / "function.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", "from func_python.http import serve; "
             "from tests.deploy.knative_probe import new; serve(new)"],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("the probe", lambda: http_ok(base + "/health/readiness"), 30, server, log)
        yield base, folder
    finally:
        server.terminate()
        server.wait(10)


def test_one_instance_serves_as_many_requests_at_once_as_knative_lets_in(
        probe: tuple[str, Path]) -> None:
    base, _ = probe

    def slow(_: int) -> int:
        req = urllib.request.Request(base + "/slow", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            most: int = json.load(r)["most"]
            return most

    with ThreadPoolExecutor(knative_probe.PEERS) as pool:
        seen = list(pool.map(slow, range(knative_probe.PEERS)))
    # All 16 handlers were in at once (one shared thread, as asgiref's WsgiToAsgi ran them,
    # saw 1); the counter cannot flake, the handlers' wait only bounds a failure.
    assert max(seen) == knative_probe.PEERS


def test_a_client_hanging_up_closes_the_stream_as_the_local_door_sees_a_hangup(
        probe: tuple[str, Path]) -> None:
    base, folder = probe
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read1(64).startswith(b": keep-alive")
    conn.close()  # the client goes
    deadline = time.monotonic() + 10
    while not (folder / "hung-up").exists():
        assert time.monotonic() < deadline, "the hang-up never reached the body's close()"
        time.sleep(0.05)


def test_a_client_leaving_a_call_still_waiting_for_its_answer_is_seen_by_the_handler(
        probe: tuple[str, Path]) -> None:
    base, folder = probe
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    conn.request("POST", "/wait", body=b"{}")
    time.sleep(0.2)  # let the call reach its handler
    conn.close()
    deadline = time.monotonic() + 10
    while not (folder / "gone").exists():
        assert time.monotonic() < deadline, "the handler never saw the client leave"
        time.sleep(0.05)
