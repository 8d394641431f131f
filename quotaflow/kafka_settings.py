"""The Kafka client properties set by environment (KAFKA_<PROPERTY>), read by
`quotaflow.settings.Settings.from_env` into `Settings.kafka_client`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping


class KafkaSettingError(ValueError):
    """A KAFKA_* variable is malformed or sets what quotaflow fixes; the message names it."""


# Every librdkafka property can be set by environment: KAFKA_<PROPERTY>, the property in upper
# case with its dots as underscores (KAFKA_SECURITY_PROTOCOL -> security.protocol,
# KAFKA_SASL_MECHANISMS -> sasl.mechanisms, KAFKA_SSL_CA_LOCATION -> ssl.ca.location).
# The way back is unambiguous because librdkafka's properties are lower case and dotted: of its
# 199 properties (librdkafka 2.16, `rd_kafka_conf_properties_show`) only these have an
# underscore in their name, and all but `log_level` are callbacks, pointers or event masks that
# only the C/Python API can set, never a string: enabled_events, *_cb (error_cb, stats_cb,
# dr_msg_cb, ...), ssl.certificate.verify_cb, ssl_key, ssl_certificate, ssl_ca,
# ssl_engine_callback_data, default_topic_conf, msg_order_cmp. So: KAFKA_LOG_LEVEL is
# `log_level`, every other name maps by the rule.
KAFKA_PREFIX = "KAFKA_"
UNDERSCORED_PROPERTIES = {"LOG_LEVEL": "log_level"}
# KAFKA_* names that are not client properties, left alone: the bootstrap servers (their own
# setting, `kafka_bootstrap`), the Kafka distribution's own scripts' variables (KAFKA_HOME,
# KAFKA_HEAP_OPTS, KAFKA_OPTS, ...) and the variables Kubernetes sets for a Service named
# `kafka` or `kafka-*` (KAFKA_PORT, KAFKA_SERVICE_HOST, KAFKA_PORT_9092_TCP_ADDR, ...).
_NOT_CLIENT = re.compile(
    r"KAFKA_(BOOTSTRAP_SERVERS|HOME|LOG_DIR|CLUSTER_ID|([A-Z0-9_]+_)?OPTS"
    r"|([A-Z0-9_]+_)?(PORT|SERVICE_HOST|SERVICE_PORT)(_[A-Z0-9_]+)?)")
_PROPERTY_VAR = re.compile(r"KAFKA_[A-Z0-9]+(_[A-Z0-9]+)*")
# Properties quotaflow's guarantees rest on; set by the code, never by environment.
FIXED_KAFKA_PROPERTIES = {
    "enable.idempotence": "a retried send must never be duplicated",
    "acks": "a send counts only once every in-sync replica has it",
    "enable.auto.commit": "offsets are committed only after the outputs and the ledger",
    "group.id": "each step's consumer group is its own",
    "bootstrap.servers": "set it with KAFKA_BOOTSTRAP_SERVERS",
    "metadata.broker.list": "set the brokers with KAFKA_BOOTSTRAP_SERVERS",
}
# Property names holding secrets: their values never appear in a repr or a log line.
_SECRET_MARKERS = ("password", "secret", "key.pem", "jaas", "oauthbearer.config", "token")


def kafka_property(var: str) -> str:
    """The librdkafka property KAFKA_<PROPERTY> sets (see the rule above)."""
    rest = var.removeprefix(KAFKA_PREFIX)
    return UNDERSCORED_PROPERTIES.get(rest) or rest.lower().replace("_", ".")


def kafka_variable(prop: str) -> str:
    """The environment variable that sets librdkafka property `prop`."""
    return KAFKA_PREFIX + prop.upper().replace(".", "_")


def is_kafka_client_variable(name: str) -> bool:
    """True for a variable read as a Kafka client property (KAFKA_*, but not the bootstrap
    servers, the Kafka scripts' or Kubernetes' own KAFKA_* variables)."""
    return name.startswith(KAFKA_PREFIX) and not _NOT_CLIENT.fullmatch(name)


def is_secret_property(prop: str) -> bool:
    return any(marker in prop for marker in _SECRET_MARKERS)


class KafkaClientConfig(Mapping[str, str]):
    """The librdkafka properties set by environment, by property name: immutable, hashable,
    and shown with its secrets redacted."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = dict(sorted((items or {}).items()))

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def redacted(self) -> dict[str, str]:
        """The properties with every secret's value replaced: safe to log."""
        return {k: "***" if is_secret_property(k) else v for k, v in self._items.items()}

    def __repr__(self) -> str:
        return f"KafkaClientConfig({self.redacted()!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaClientConfig:
        """Every KAFKA_<PROPERTY> variable of `env` (an empty one counts as unset)."""
        props: dict[str, str] = {}
        for name in sorted(env):
            if not is_kafka_client_variable(name) or env[name] == "":
                continue
            if not _PROPERTY_VAR.fullmatch(name):
                raise KafkaSettingError(
                    f"{name} is not a Kafka client setting: KAFKA_<PROPERTY> is a librdkafka "
                    "property in upper case with its dots as underscores, e.g. "
                    "KAFKA_SECURITY_PROTOCOL for security.protocol")
            prop = kafka_property(name)
            if prop in FIXED_KAFKA_PROPERTIES:
                raise KafkaSettingError(f"{name} cannot be set: quotaflow sets {prop} itself "
                                    f"({FIXED_KAFKA_PROPERTIES[prop]})")
            props[prop] = env[name]
        return cls(props)
