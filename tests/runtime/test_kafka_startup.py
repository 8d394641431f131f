"""Start-up fails fast on Kafka settings the brokers refuse: an unknown CA, SASL a broker does
not take, TLS against a plain listener, a refused property or brokers that never answer end
start-up within 30 s with one line, never a hang or an endless retry."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quotaflow.adapters.kafka import KafkaUnavailable, check_brokers
from quotaflow.settings import KafkaClientConfig, Settings
from tests.conftest import REPO

LIMIT_S = 30


def settings_for(bootstrap: str, **props: str) -> Settings:
    return replace(Settings(), kafka_bootstrap=bootstrap,
                   kafka_client=KafkaClientConfig(props), kafka_startup_timeout_s=4)


def fails(settings: Settings) -> tuple[str, float]:
    """check_brokers' one line and how long it took."""
    start = time.monotonic()
    with pytest.raises(KafkaUnavailable) as caught:
        check_brokers(settings)
    took = time.monotonic() - start
    line = str(caught.value)
    assert "\n" not in line and line.startswith("quotaflow: ")
    assert took < LIMIT_S
    return line, took


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A TLS listener whose certificate no CA the client knows signed (it completes the
    handshake, then says nothing)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                held.append(ctx.wrap_socket(conn, server_side=True))
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture(scope="module")
def silent_port() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_brokers_that_take_the_settings_pass(kafka_bootstrap: str) -> None:
    check_brokers(settings_for(kafka_bootstrap))


def test_an_unknown_ca_ends_start_up_at_once(tls_broker: str) -> None:
    line, took = fails(settings_for(tls_broker, **{"security.protocol": "SSL"}))
    assert "certificate verify failed" in line and "KAFKA_SSL_CA_LOCATION" in line
    assert took < 4  # librdkafka's own error: no waiting for the deadline


def test_sasl_the_broker_does_not_take_ends_start_up_at_once(kafka_bootstrap: str) -> None:
    line, took = fails(settings_for(kafka_bootstrap, **{
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "quotaflow-estimate", "sasl.password": "wrong-pa55"}))
    assert "SASL" in line and "KAFKA_SASL_PASSWORD" in line
    assert "wrong-pa55" not in line
    assert took < 4


def test_tls_against_a_plain_listener_ends_start_up_by_the_deadline(
        kafka_bootstrap: str) -> None:
    line, took = fails(settings_for(kafka_bootstrap, **{"security.protocol": "SSL"}))
    # Apache Kafka closes a TLS handshake on a plain listener at once, and the line says so;
    # Tansu never answers it, and the line comes at the deadline. Either way it names the fix.
    assert ("KAFKA_SECURITY_PROTOCOL" in line and "SSL handshake failed" in line) or (
        "did not answer within 4 s" in line and "speaks SSL" in line), line
    assert took < 4 + 2


def test_brokers_that_accept_and_never_answer_end_start_up_by_the_deadline(
        silent_port: str) -> None:
    line, took = fails(settings_for(silent_port))
    assert "did not answer within 4 s" in line and silent_port in line
    assert took < 4 + 2


def test_a_property_the_client_refuses_is_named_by_its_variable(kafka_bootstrap: str) -> None:
    line, _ = fails(settings_for(kafka_bootstrap, **{"security.protocol": "TLS"}))
    assert "KAFKA_SECURITY_PROTOCOL" in line
    line, _ = fails(settings_for(kafka_bootstrap, **{"no.such.property": "1"}))
    assert "KAFKA_NO_SUCH_PROPERTY" in line


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quotaflow", *args], cwd=cwd,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env},
                          capture_output=True, text=True, timeout=LIMIT_S)


@pytest.mark.parametrize("command", [["run", "estimate"], ["analytics", "run"],
                                     ["topics", "create"]])
def test_a_step_or_cli_with_an_unknown_ca_exits_with_one_line(
        command: list[str], tls_broker: str, tmp_path: Path) -> None:
    start = time.monotonic()
    done = run_cli(command, {"KAFKA_BOOTSTRAP_SERVERS": tls_broker,
                             "KAFKA_SECURITY_PROTOCOL": "SSL"}, tmp_path)
    assert time.monotonic() - start < LIMIT_S
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "certificate verify failed" in lines[0], done.stderr


def test_a_malformed_kafka_variable_exits_with_one_line_naming_it(tmp_path: Path) -> None:
    done = run_cli(["run", "estimate"], {"KAFKA_ENABLE_AUTO_COMMIT": "true"}, tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "KAFKA_ENABLE_AUTO_COMMIT" in lines[0], done.stderr


def test_the_wsgi_factory_of_a_step_ends_with_one_line(
        tls_broker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from quotaflow.runtime import entry

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", tls_broker)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    with pytest.raises(KafkaUnavailable, match="certificate verify failed"):
        entry.create("estimate")
