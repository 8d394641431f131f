"""The Knative entry (`quotaflow.runtime.knative.KnativeFunction`, what `function.new()`
returns) over ASGI: honest readiness before start-up, and settle taking the PingSource sweep
exactly as PingSource delivers it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from typing import Any

from quotaflow.adapters import kafka
from quotaflow.runtime.knative import KnativeFunction
from quotaflow.settings import Settings
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
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

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
