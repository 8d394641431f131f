"""Every librdkafka property by environment (KAFKA_<PROPERTY>): read once into `Settings`,
redacted wherever shown, and applied to every client quotaflow makes."""

from __future__ import annotations

import re
import runpy
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from quotaflow.adapters import kafka
from quotaflow.settings import (
    KafkaClientConfig,
    Settings,
    SettingsError,
    is_kafka_client_variable,
    kafka_property,
    kafka_variable,
)
from tests.conftest import REPO

SECURED = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093,kafka-2:9093",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "quotaflow-estimate",
    "KAFKA_SASL_PASSWORD": "s3cret-pa55",
    "KAFKA_SSL_CA_LOCATION": "/etc/kafka/ca.crt",
    "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "https",
}
SECURED_PROPS = {
    "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": "quotaflow-estimate", "sasl.password": "s3cret-pa55",
    "ssl.ca.location": "/etc/kafka/ca.crt", "ssl.endpoint.identification.algorithm": "https",
}


def test_kafka_variables_become_librdkafka_properties() -> None:
    settings = Settings.from_env(SECURED)
    assert settings.kafka_bootstrap == "kafka-1:9093,kafka-2:9093"
    assert dict(settings.kafka_client) == SECURED_PROPS


def test_the_name_rule_and_its_one_exception() -> None:
    assert kafka_property("KAFKA_SECURITY_PROTOCOL") == "security.protocol"
    assert kafka_property("KAFKA_SSL_KEYSTORE_LOCATION") == "ssl.keystore.location"
    assert kafka_property("KAFKA_LOG_LEVEL") == "log_level"  # librdkafka's one underscore
    for prop in SECURED_PROPS:
        assert kafka_property(kafka_variable(prop)) == prop


def test_variables_that_are_not_client_properties_are_left_alone() -> None:
    env = {"KAFKA_HOME": "/opt/kafka", "KAFKA_HEAP_OPTS": "-Xmx1G", "KAFKA_OPTS": "-Dx",
           "KAFKA_LOG4J_OPTS": "-Dlog4j", "KAFKA_CLUSTER_ID": "abc",
           # What Kubernetes sets for a Service named `kafka` / `kafka-bootstrap`:
           "KAFKA_PORT": "tcp://10.0.0.1:9092", "KAFKA_PORT_9092_TCP_ADDR": "10.0.0.1",
           "KAFKA_SERVICE_HOST": "10.0.0.1", "KAFKA_SERVICE_PORT_TCP": "9092",
           "KAFKA_BOOTSTRAP_SERVICE_HOST": "10.0.0.2", "KAFKA_BOOTSTRAP_PORT": "tcp://x:1",
           "KAFKA_SASL_USERNAME": "", "QF_KAFKA_LINGER_MS": "5"}
    assert not any(is_kafka_client_variable(k) for k in env if k != "KAFKA_SASL_USERNAME")
    assert dict(Settings.from_env(env).kafka_client) == {}  # and an empty value is unset


@pytest.mark.parametrize("name, why", [
    ("KAFKA_sasl_username", "upper case"),
    ("KAFKA_SASL__USERNAME", "upper case"),
    ("KAFKA_ENABLE_AUTO_COMMIT", "enable.auto.commit"),
    ("KAFKA_ENABLE_IDEMPOTENCE", "enable.idempotence"),
    ("KAFKA_ACKS", "acks"),
    ("KAFKA_GROUP_ID", "group.id"),
])
def test_a_malformed_or_fixed_variable_is_refused_naming_it(name: str, why: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(name)) as caught:
        Settings.from_env({name: "1"})
    assert why in str(caught.value)


def test_secrets_never_show_in_a_repr_or_the_redacted_view() -> None:
    settings = Settings.from_env({**SECURED, "KAFKA_SSL_KEY_PASSWORD": "k3y-pa55",
                                  "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "oauth-s3cret",
                                  "KAFKA_SSL_KEY_PEM": "-----BEGIN PRIVATE KEY-----"})
    shown = repr(settings) + str(settings) + repr(settings.kafka_client.redacted())
    for secret in ("s3cret-pa55", "k3y-pa55", "oauth-s3cret", "BEGIN PRIVATE KEY"):
        assert secret not in shown
    assert "quotaflow-estimate" in shown and "SASL_SSL" in shown  # the rest is shown


def test_settings_with_kafka_properties_survive_the_child_environment() -> None:
    settings = Settings.from_env(SECURED)
    assert Settings.from_env(settings.as_env()) == settings
    assert hash(settings) == hash(Settings.from_env(settings.as_env()))


def _secured() -> Settings:
    return replace(Settings(), kafka_bootstrap="kafka-1:9093",
                   kafka_client=KafkaClientConfig(SECURED_PROPS))


def test_producers_get_the_security_settings_and_keep_their_guarantees() -> None:
    config = kafka.producer_config(_secured())
    assert config.items() >= SECURED_PROPS.items()
    assert config["bootstrap.servers"] == "kafka-1:9093"
    assert config["enable.idempotence"] is True and config["acks"] == "all"


def test_environment_wins_over_quotaflows_tunables_but_not_the_callers_overrides() -> None:
    settings = replace(Settings(), kafka_client=KafkaClientConfig(
        {"linger.ms": "20", "partition.assignment.strategy": "roundrobin"}))
    assert kafka.producer_config(settings)["linger.ms"] == "20"
    assert kafka.client_config(settings, {"linger.ms": 2}, **{
        "partition.assignment.strategy": "range"})["partition.assignment.strategy"] == "range"


class Recorder:
    """Stands in for a confluent-kafka client class: records the configuration it gets."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        Recorder.made.append(config)

    def subscribe(self, *_a: Any, **_k: Any) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    Recorder.made = []
    for name in ("Producer", "Consumer", "AdminClient"):
        monkeypatch.setattr(kafka, name, Recorder)
    return Recorder.made


def test_every_kind_of_client_gets_the_same_security_settings(
        recorded: list[dict[str, Any]]) -> None:
    from quotaflow.analytics.consumer import AnalyticsConsumer
    from quotaflow.analytics.memory import MemoryUsageStore

    settings = _secured()
    kafka.make_producer(settings)
    kafka.make_consumer(settings, "quotaflow-estimate")
    kafka.admin_client(settings)
    AnalyticsConsumer(settings, MemoryUsageStore())
    assert len(recorded) == 4
    for config in recorded:
        assert config.items() >= {**SECURED_PROPS, "bootstrap.servers": "kafka-1:9093"}.items()
    assert recorded[1]["group.id"] == "quotaflow-estimate"
    assert recorded[1]["enable.auto.commit"] is False
    assert recorded[3]["partition.assignment.strategy"] == "range"  # analytics' own


def test_every_client_in_quotaflow_is_made_in_the_kafka_adapter() -> None:
    """So none escapes `client_config`: the only Producer(, Consumer( and AdminClient( calls
    in quotaflow/ are in quotaflow/adapters/kafka.py (and the start-up check in kafka_config.py).
    The local cluster's own management clients (quotaflow/devstack: readiness, warm-up, ACLs)
    are not configured from `Settings` but from the cluster's own listeners and admin user."""
    made = re.compile(r"\b(Producer|Consumer|AdminClient)\(")
    outside = [f"{p.relative_to(REPO)}:{n}"
               for p in sorted((REPO / "quotaflow").rglob("*.py"))
               if p.parent.name != "devstack"
               and (p.name not in ("kafka.py", "kafka_config.py") or p.parent.name != "adapters")
               for n, line in enumerate(p.read_text().splitlines(), 1)
               if made.search(line) and not line.lstrip().startswith(("#", "class "))]
    assert outside == []


def test_the_example_consumer_reads_the_same_variables_the_same_way() -> None:
    example = runpy.run_path(str(REPO / "kafka/examples/consume.py"))
    env = {**SECURED, "KAFKA_LOG_LEVEL": "3", "KAFKA_HOME": "/opt/kafka",
           "KAFKA_HEAP_OPTS": "-Xmx1G", "KAFKA_SERVICE_HOST": "10.0.0.1", "PATH": "/bin"}
    assert example["env_client_config"](env) == dict(Settings.from_env(env).kafka_client)
