"""The command line on a backing service that is down: one line on stderr naming the service,
exit status 3, no traceback (the same classification as the door's 503s and the steps'
retries: `quotaflow.runtime.faults.is_infrastructure`). Fakes raise; no service is needed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka import KafkaError, KafkaException

from quotaflow import compose
from quotaflow.cli.main import UNAVAILABLE_EXIT, main


def _raises(error: Exception) -> Any:
    def fake(*_args: Any, **_kwargs: Any) -> Any:
        raise error
    return fake


@pytest.mark.parametrize(("argv", "target", "error", "service"), [
    (["migrate"], "migrate", psycopg.OperationalError(
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host?"), "PostgreSQL"),
    (["projection", "rebuild"], "projection", redis.ConnectionError(
        "Error 111 connecting to 127.0.0.1:6379. Connection refused."), "Redis"),
    (["key", "list", "acme"], "postgres", psycopg.OperationalError("timeout expired"),
     "PostgreSQL"),
], ids=["migrate", "projection", "key-list"])
def test_a_command_whose_service_is_down_says_so_in_one_line_and_exits_3(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
        target: str, error: Exception, service: str) -> None:
    monkeypatch.setattr(compose, "ledger", lambda _settings: object())
    monkeypatch.setattr(compose, target, _raises(error))
    assert main(argv) == UNAVAILABLE_EXIT
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"quotaflow {argv[0]}: {service} is "
                                                   "unavailable: ")
    assert "Traceback" not in out.err + out.out


def test_a_broker_that_is_down_is_named_kafka(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from quotaflow.adapters import kafka

    # The start-up probe answers first when no broker listens (tests/runtime/test_kafka_startup):
    # here the brokers answer it and then fail the call itself.
    monkeypatch.setattr(kafka, "check_brokers", lambda _settings: None)
    monkeypatch.setattr(kafka, "create_topics", _raises(
        KafkaException(KafkaError(KafkaError._TRANSPORT))))
    assert main(["topics", "create"]) == UNAVAILABLE_EXIT
    assert capsys.readouterr().err.startswith("quotaflow topics: Kafka is unavailable: ")


def test_a_bug_is_not_taken_for_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compose, "migrate", _raises(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        main(["migrate"])
