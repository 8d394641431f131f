"""Redis as production runs it, for the contract suites: a 3-master Redis Cluster and one
Redis, both speaking only TLS (a certificate from a CA made for this test session) and
asking for a password. Each is started on first use on free ports from Debian's `redis-server`,
and stopped when the session ends; the keys and certificates live in a temporary folder.

`client(variant, db)` is the one way a contract suite opens Redis: "redis" (the plain Redis
of `tests.services`, database `db`), "redis-tls" (database `db`) or "redis-cluster" (a cluster
has database 0 only, emptied for each call)."""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quotaflow.adapters.redis_client import RedisClient, connect_redis
from quotaflow.devstack.process import free_port

REDIS_VARIANTS = ("redis", "redis-tls", "redis-cluster")
PASSWORD = "contract-test-password"  # a throwaway server's, never a real credential


def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="qf-redis-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


@cache
def _tls_supported(binary: str) -> bool:
    # A build without TLS refuses `tls-port` as a bad directive; one with it reads that line
    # and refuses the next, made up for the purpose. Either way nothing starts.
    out = subprocess.run([binary, "--port", "0", "--tls-port", "0", "--qf-probe", "x"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=10).stdout
    return "qf-probe" in out


def _start(folder: Path, name: str, args: list[str]) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH")
    if "--tls-port" in args and not _tls_supported(binary):
        pytest.skip("this redis-server is built without TLS (BUILD_TLS=yes)")
    log = (folder / f"{name}.log").open("wb")
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), *args], stdout=log, stderr=subprocess.STDOUT)
    atexit.register(_stop, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait(what: str, ready: Callable[[], object], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {timeout_s:.0f} s")


@cache
def cluster_url() -> str:
    """Three masters with cluster mode on, joined with `redis-cli --cluster create` (no
    replicas), as production runs them: TLS only (between the nodes too) and a password; the
    URL of one node (the client finds the others)."""
    ca, cert, key = certificates()
    ports = [free_port() for _ in range(3)]
    for port in ports:
        node = ca.parent / f"node-{port}"
        node.mkdir()
        _start(node, "redis", [
            *_tls(port, ca, cert, key), "--tls-cluster", "yes", "--masterauth", PASSWORD,
            "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
            "--cluster-config-file", str(node / "nodes.conf"), "--cluster-node-timeout", "5000"])
    clients = [connect_redis(_tls_url(port, ca)) for port in ports]
    for port, c in zip(ports, clients, strict=True):
        _wait(f"Redis node {port}", c.ping)
    subprocess.run(["redis-cli", "--tls", "--cacert", str(ca), "--cluster", "create",
                    *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
                    "--cluster-yes"], check=True, capture_output=True, timeout=60,
                   env={**os.environ, "REDISCLI_AUTH": PASSWORD})
    for c in clients:
        _wait("the cluster", lambda c=c: c.cluster("info")  # type: ignore[misc]
              .get("cluster_state") == "ok")
    return _tls_url(ports[0], ca)


def _tls(port: int, ca: Path, cert: Path, key: Path) -> list[str]:
    # TLS only (no plain port), clients not asked for certificates, a password.
    return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no", "--requirepass", PASSWORD]


def _tls_url(port: int, ca: Path) -> str:
    return f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it: (CA cert,
    server cert, server key)."""
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("quotaflow test CA"))
          .issuer_name(name("quotaflow test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([
                  x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                  x509.DNSName("localhost")]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


@cache
def certificates() -> tuple[Path, Path, Path]:
    """The CA, server certificate and key of this session (made once), for any server."""
    return make_certificates(_folder())


@cache
def tls_url() -> str:
    """A Redis that listens only on TLS and asks for a password; its URL names the CA that
    signed its certificate, so the client verifies the certificate and the host name."""
    ca, cert, key = certificates()
    port = free_port()
    _start(ca.parent, f"redis-tls-{port}", _tls(port, ca, cert, key))
    url = _tls_url(port, ca)
    _wait("Redis over TLS", connect_redis(url).ping)
    return url


def url(variant: str, db: int) -> str:
    """The URL of `variant`'s Redis at database `db` (0 on a cluster)."""
    if variant == "redis-cluster":
        return cluster_url()
    if variant == "redis-tls":
        base, _, query = tls_url().partition("/0?")
        return f"{base}/{db}?{query}"
    from tests.services import redis_base

    return f"{redis_base()}/{db}"


def client(variant: str, db: int, timeout_ms: int = 0, flush: bool = True) -> RedisClient:
    """A client of `variant`'s Redis (a cluster client for "redis-cluster"), its database
    emptied first unless `flush` is false."""
    c = connect_redis(url(variant, db), timeout_ms,
                      "cluster" if variant == "redis-cluster" else "standalone")
    if flush:
        c.flushdb()
    return c
