"""The configuration every Kafka client quotaflow makes gets, and the start-up check that the
brokers take it.

`client_config` is the one place a client's configuration is made: the bootstrap servers, the
client's own defaults, then every librdkafka property set by environment
(`Settings.kafka_client`: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*, ...; the name
rule is in quotaflow/settings.py), then the call's overrides. Producers, consumers, admin
clients (`quotaflow.adapters.kafka`) and the analytics consumer all get theirs from it."""

from __future__ import annotations

import logging
import queue
import re
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from quotaflow.settings import Settings, kafka_variable


def client_config(settings: Settings, own: dict[str, Any] | None = None,
                  **overrides: Any) -> dict[str, Any]:
    """The configuration of every Kafka client quotaflow makes: the bootstrap servers, the
    client's own defaults (`own`), the librdkafka properties set by environment
    (`settings.kafka_client`, e.g. security.protocol, sasl.*, ssl.*: they win over the
    defaults), and last the call's `overrides`. The properties quotaflow's guarantees rest on
    (acks, idempotence, auto commit, group.id) cannot be set by environment (settings.py)."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **(own or {}),
            **settings.kafka_client, **overrides}


def producer_config(settings: Settings) -> dict[str, Any]:
    """Idempotent, fully acknowledged production: a retried send is never duplicated."""
    return client_config(settings, {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.kafka_linger_ms,
        "compression.type": "none",
    })

def consumer_config(settings: Settings, group: str, **overrides: Any) -> dict[str, Any]:
    """A consumer in `group` that commits offsets only when told to."""
    own: dict[str, Any] = {
        # Offsets are committed by hand, after outputs are flushed and the ledger committed.
        "enable.auto.commit": False,
        # A group's first start reads what was produced before it joined (`latest` would skip
        # it: lost usage). Tansu needs it too: its high watermark is wrong after batched
        # produce, so `latest` re-delivers there.
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 4),
        "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    return client_config(settings, own, **{**overrides, "group.id": group})


class KafkaUnavailable(SystemExit):
    """Start-up cannot use the brokers: a wrong password, an unknown CA, a bad setting, or no
    answer in time. A `SystemExit` whose message is one line: uncaught, Python prints just
    that line and exits 1, with no traceback."""


# librdkafka's errors that retrying never cures.
_FATAL_CODES = {KafkaError._AUTHENTICATION, KafkaError._SSL,
                KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._INVALID_ARG,
                KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_SASL_MECHANISM,
                KafkaError.ILLEGAL_SASL_STATE, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                KafkaError.TOPIC_AUTHORIZATION_FAILED}
_FATAL_TEXT = re.compile(r"SSL handshake failed|certificate verify failed|SASL authentication"
                         r"|SASL handshake failed|Unsupported SASL mechanism", re.I)
_PROPERTY = re.compile(r'property:? "([^"]+)"')
_QUIET = logging.getLogger(f"{__name__}.probe")
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())


def _setting_error(settings: Settings, exc: Exception) -> str:
    """A client refused its configuration: the message, naming the variable that set it."""
    text = str(exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError)
               else exc)
    match = _PROPERTY.search(text)
    prop = match.group(1) if match else ""
    if prop in settings.kafka_client:
        return f"Kafka setting {kafka_variable(prop)} is refused by the client: {text}"
    return f"Kafka client configuration is refused: {text}"


def _explain(err: KafkaError) -> str:
    text = err.str()
    if err.code() in (KafkaError._AUTHENTICATION,
                      KafkaError.SASL_AUTHENTICATION_FAILED) or "SASL" in text:
        hint = "check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISMS"
    elif err.code() == KafkaError._SSL or "SSL" in text:
        hint = ("check KAFKA_SECURITY_PROTOCOL and the CA (KAFKA_SSL_CA_LOCATION or "
                "KAFKA_SSL_CA_PEM)")
    elif "AUTHORIZATION" in err.name():
        hint = "the user's ACLs do not allow it"
    else:
        hint = "check the KAFKA_* settings"
    return f"{text} ({hint})"


def check_brokers(settings: Settings, timeout_s: float | None = None) -> None:
    """Start-up check: ask the brokers for metadata with the very configuration every client
    gets, and end start-up with one line if they cannot be used. A wrong password, an
    unknown CA, TLS against a plain listener or a refused setting end it as soon as librdkafka
    reports it; brokers that do not answer end it after `timeout_s`
    (`settings.kafka_startup_timeout_s`). Raises `KafkaUnavailable`."""
    timeout = settings.kafka_startup_timeout_s if timeout_s is None else timeout_s
    where = f"Kafka at {settings.kafka_bootstrap}"
    errors: queue.SimpleQueue[KafkaError] = queue.SimpleQueue()
    try:
        admin = AdminClient(client_config(settings, error_cb=errors.put, logger=_QUIET))
    except (KafkaException, ValueError, TypeError) as exc:
        raise KafkaUnavailable(f"quotaflow: {_setting_error(settings, exc)}") from None
    deadline = time.monotonic() + timeout
    last: str = ""
    while True:
        try:
            admin.list_topics(timeout=max(0.1, min(0.5, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last = exc.args[0].str() if isinstance(exc.args[0], KafkaError) else str(exc)
        admin.poll(0)  # serves error_cb
        seen: list[KafkaError] = []
        while not errors.empty():
            seen.append(errors.get())
        fatal = [e for e in seen if e.code() in _FATAL_CODES or _FATAL_TEXT.search(e.str())]
        if fatal:
            raise KafkaUnavailable(f"quotaflow: {where} cannot be used: {_explain(fatal[0])}")
        if seen:
            last = seen[-1].str()
        if time.monotonic() >= deadline:
            protocol = settings.kafka_client.get("security.protocol", "PLAINTEXT").upper()
            raise KafkaUnavailable(
                f"quotaflow: {where} did not answer within {timeout:g} s"
                + (f" ({last})" if last else "") + "; check KAFKA_BOOTSTRAP_SERVERS and that "
                f"its listener speaks {protocol} (KAFKA_SECURITY_PROTOCOL)")
