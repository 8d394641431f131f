"""A function's build context is deployable: installed into a fresh virtual environment the way
knative/func's builders do (only its own directory plus declared dependencies), served by the
func-python middleware on loopback, it takes a binary-mode CloudEvent exactly as KafkaSource
delivers one of our records, and its output appears on Kafka."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml
from confluent_kafka import Consumer

from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.deploy.context import prepare
from quotaflow.devstack.process import free_port, http_ok, wait_for
from quotaflow.events.envelope import Envelope, from_kafka, to_http
from quotaflow.events.payloads import Recorded, Settled
from quotaflow.settings import Settings
from tests.conftest import REPO
from tests.services import fresh_database, redis_base

pytestmark = pytest.mark.slow


def build_context(tmp: Path, step: str) -> Path:
    """functions/STEP as `kn func deploy --path functions/STEP` would see it after prepare."""
    (tmp / "functions").mkdir()
    shutil.copytree(REPO / "functions" / step, tmp / "functions" / step,
                    ignore=shutil.ignore_patterns("__pycache__", "events", "functions",
                                                  "quotaflow", "build", "*.egg-info"))
    return prepare(step, root=tmp)


def test_record_function_installs_alone_and_serves_kafkasource_deliveries(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    context = build_context(tmp_path, "record")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # As func's Python scaffolding declares it: the middleware plus `function @ <context>`
    # (pip refuses a build context whose project is not named `function`).
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          f"function @ {context.as_uri()}", "func-python>=0.8,<0.9"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]

    url = fresh_database("qf_test_deploy")
    prefix = f"d{uuid.uuid4().hex[:6]}."
    settings = replace(Settings(), kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
                       postgres_url=url, redis_url=f"{redis_base()}/11")
    kafka.create_topics(settings)
    with db.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
                     "payload_hash, status, model) VALUES ('req-9', 'acme', 'k', '/s', 'e', 'h',"
                     " 'reserved', 'm')")
    port = free_port()
    env = {"PATH": os.environ["PATH"], **settings.as_env(),
           "LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    log = (tmp_path / "function.log").open("wb")
    # Run from an empty directory: everything must come from the installed build context.
    server = subprocess.Popen(
        [str(venv / "bin" / "python"), "-c",
         "from func_python.http import serve; from function import new; serve(new)"],
        cwd=tmp_path / "venv", env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for("the function", lambda: http_ok(base + "/health/readiness"), 60, server,
                 tmp_path / "function.log")

        settled = Envelope.of(Settled(
            request_id="req-9", tenant="acme", status="completed", reserved_tokens=40,
            charged_tokens=25, released_tokens=15, prompt_tokens=20, completion_tokens=5,
            text="hello", model="m", model_version="v1", reason=None, ledger_seq=7), "settle")
        headers, body = to_http(settled)  # ce-* headers, content-type application/avro
        req = urllib.request.Request(base + "/", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200

        c = Consumer(kafka.client_config(settings, {
            "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
            "session.timeout.ms": 2000}))
        c.subscribe([settings.topic("recorded")])
        got: list[Any] = []
        until = time.monotonic() + 20
        while not got and time.monotonic() < until:
            got = [m for m in c.consume(10, 0.5) if not m.error()]
        c.close()
        assert got, "no recorded event on Kafka"
        recorded = from_kafka(got[0].headers(), got[0].key(), got[0].value())
        assert recorded.id == "req-9/recorded"
        assert recorded.payload == Recorded(request_id="req-9", tenant="acme", status="completed")
        with db.connect(url) as conn:
            row = conn.execute("SELECT status, charged_tokens, output FROM requests "
                               "WHERE request_id = 'req-9'").fetchone()
        assert row == ("completed", 25, "hello")
    finally:
        server.terminate()
        server.wait(10)


def test_migration_job_command_migrates_an_empty_database_from_the_admit_image(
        tmp_path: Path) -> None:
    context = build_context(tmp_path, "admit")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          f"function @ {context.as_uri()}"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    url = fresh_database("qf_test_deploy_job")
    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute('DROP DATABASE "qf_test_deploy_job" WITH (FORCE)')

    job = yaml.safe_load((REPO / "infra/k8s/migrate-job.yaml").read_text())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = [str(venv / "bin" / "python"), *container["command"][1:]]
    assert container["command"][0] == "python"
    run = subprocess.run(command, cwd=venv, capture_output=True, text=True, timeout=120,
                         env={"PATH": os.environ["PATH"], "POSTGRES_URL": url})
    assert run.returncode == 0, run.stderr[-3000:]
    with db.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)
