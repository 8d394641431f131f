"""The local Apache Kafka cluster secured as users run theirs: SASL_SSL with SCRAM-SHA-512 users
and a certificate authority made at its first start, and ACLs, so a function's user writes its
own topics and is refused another's (estimate cannot write `completed`); a wrong password or a
client that does not trust the CA gets nowhere. One node (the ACLs and the handshake are the
same on three)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from quotaflow.devstack import kafka_cluster
from quotaflow.devstack.kafka_security import LocalSecurity, owner_only

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not kafka_cluster.available(),
                                 reason="Apache Kafka cannot run here (Java 17+ and its jars)")]
USER = "quotaflow-estimate"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_cluster.KafkaCluster]:
    root = tmp_path_factory.mktemp("sasl")
    cluster = kafka_cluster.KafkaCluster(
        root, size=1, security=LocalSecurity.create(root / "security", [USER]))
    cluster.start()
    try:
        admin = AdminClient({**cluster.client_config(), "log_level": 0})
        for future in admin.create_topics([NewTopic(t, 1, 1) for t in
                                           ("q.admitted", "q.estimated", "q.completed")]).values():
            future.result()
        cluster.grant(USER, reads=["q.admitted"], writes=["q.estimated"],
                      groups=["quotaflow-estimate"])
        yield cluster
    finally:
        cluster.stop(remove=True)


def send(config: dict[str, str | int | float | bool], topic: str
         ) -> tuple[list[KafkaError | None], list[KafkaError]]:
    """One record to `topic`: its delivery reports and the client's errors."""
    reports: list[KafkaError | None] = []
    errors: list[KafkaError] = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 4000, "log_level": 0,
                         "error_cb": errors.append})
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(10)
    return reports, errors


def test_a_function_writes_its_own_topic_and_is_refused_another(
        secured: kafka_cluster.KafkaCluster) -> None:
    assert send(secured.client_config(USER), "q.estimated")[0] == [None]
    refused, _ = send(secured.client_config(USER), "q.completed")
    assert [e.code() for e in refused if e] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_a_wrong_password_is_refused_as_such(secured: kafka_cluster.KafkaCluster) -> None:
    reports, errors = send({**secured.client_config(USER), "sasl.password": "wrong"},
                           "q.estimated")
    assert reports and reports[0] is not None
    assert KafkaError._AUTHENTICATION in {e.code() for e in errors}


def test_a_client_that_does_not_trust_the_ca_gets_nowhere(
        secured: kafka_cluster.KafkaCluster) -> None:
    config = secured.client_config(USER)
    del config["ssl.ca.location"]  # the system's CAs only
    reports, errors = send(config, "q.estimated")
    assert reports and reports[0] is not None
    assert any("certificate" in e.str().lower() or e.code() == KafkaError._SSL for e in errors)


def test_credentials_are_readable_by_their_owner_only(
        secured: kafka_cluster.KafkaCluster) -> None:
    assert secured.security is not None
    folder: Path = secured.security.folder
    assert owner_only(folder / "credentials.json") and owner_only(folder / "broker.p12")
    assert str(secured.properties(secured.node(1))["listeners"]).startswith(
        "SASL_SSL://127.0.0.1:")
