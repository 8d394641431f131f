"""One typed settings object, read once at start-up from the environment.

Nothing else in quotaflow reads `os.environ`: processes call `Settings.from_env()` and pass
the result (or parts of it) down. A missing or malformed value fails naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from quotaflow.kafka_settings import (
    KafkaClientConfig,
    KafkaSettingError,
    is_kafka_client_variable,
    kafka_property,
    kafka_variable,
)
from quotaflow.runtime.client_address import networks

__all__ = ["ENV_NAMES", "KafkaClientConfig", "Settings", "SettingsError",
           "is_kafka_client_variable", "kafka_property", "kafka_variable"]


class SettingsError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/quotaflow"
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint_url: str = ""
    model_bucket: str = "quotaflow-models"
    model_name: str = "smollm2-135m-instruct"
    # "standin" (deterministic, no weights), "dir:PATH" (a built model directory) or "registry"
    model_source: str = "standin"
    model_cache_dir: str = ".quotaflow/models"
    # 1: ONNX Runtime's threads spin between operators, fastest on cores of their own (the bare
    # loop, a Knative infer pod); 0: they sleep, leaving the cores to the processes they share
    # them with (the local stack sets 0; BENCHMARKS.md, "Continuous batching").
    ort_spin: int = 1
    # The stand-in's pause per decode step (0: none), so tests can hang up mid-stream.
    standin_token_delay_ms: int = 0
    public_url: str = "http://127.0.0.1:8080"
    topic_prefix: str = "quotaflow."
    consumer_group_prefix: str = "quotaflow-"
    # How long a dead consumer's partitions wait before the group hands them on (a killed
    # step resumes within this); Tansu also joins a group only after half of it (README, Kafka
    # broker quirks). Apache Kafka's floor is its group.min.session.timeout.ms (6 s default).
    kafka_session_timeout_ms: int = 6000
    # Apache Kafka answers a fetch as soon as a record arrives (long-poll), so this bounds only
    # an idle consumer's round trips; Tansu answers only after it, so its stack sets 50 (per-hop
    # latency; README, Kafka broker quirks).
    kafka_fetch_wait_max_ms: int = 500
    # How long a producer holds a message to send it with others (admit's requests share
    # produce requests this way; a step flushes its batch at once).
    kafka_linger_ms: int = 2
    # How long admit waits for the brokers to confirm a request's event before answering 503:
    # longer than a partition leader's failover (a node killed is fenced after the brokers'
    # session timeout, 3 s on the local cluster, then a new leader is elected; a follower
    # paused holds acks=all until then), so one broker down is a slower 202, not a 503.
    kafka_publish_timeout_ms: int = 8000
    max_body_bytes: int = 64 * 1024
    max_prompt_chars: int = 32_000
    max_tokens_limit: int = 512
    reservation_ttl_s: int = 300
    sweep_interval_s: int = 30
    # The reconciler re-drives a request left queued or reserved this long without progress
    # (a lost message, a dead process), and ends it `failed` past the deadline.
    redrive_after_s: int = 60
    request_deadline_s: int = 900
    # How long a backing service may take before the caller gives up (admit answers 503).
    db_connect_timeout_s: int = 3
    db_statement_timeout_ms: int = 5000
    redis_timeout_ms: int = 2000
    redis_mode: str = "standalone"  # or "cluster": REDIS_URL names any node of a Redis Cluster
    # The longest pause between retries of an infrastructure error (a step keeps retrying).
    retry_backoff_max_s: int = 10
    # How long an admit process trusts a looked-up API key (a revocation takes this long).
    auth_cache_ms: int = 1000
    # How many keys a second each client address (and each key id) may have looked up that
    # then fail; past it, a key not seen valid is answered 429 (door/auth.py).
    auth_failures_per_s: int = 10
    auth_failures_per_s_total: int = 200  # the same for all clients of one admit process
    waits_per_key: int = 8  # waits and streams one key may hold at once, per admit process
    reads_per_s_per_key: int = 100  # GETs, resends and 409s a second, per key and admit process
    trusted_proxies: str = ""  # CIDRs whose X-Forwarded-For names the client (client_address.py)
    # The most requests infer decodes at once (continuous batching: each joins the running
    # batch when it arrives and leaves it when it ends).
    batch_max: int = 8
    batch_wait_ms: int = 5
    handler_retries: int = 3
    log_level: str = "INFO"
    metrics_port: int = 0
    # `dev up --knative`: a function with no delivery for this long is stopped (scale to zero)
    # and started again by its next delivery.
    knative_idle_s: int = 30
    # Where that port listens: loopback locally; 0.0.0.0 on a cluster, for the scraper.
    metrics_addr: str = "127.0.0.1"
    # Every librdkafka property set by environment (KAFKA_<PROPERTY>: security.protocol,
    # sasl.*, ssl.*, ...), applied to every client quotaflow makes (adapters/kafka.py).
    kafka_client: KafkaClientConfig = field(default_factory=KafkaClientConfig)
    # How long start-up waits for the brokers to answer before it gives up with one line
    # (a wrong password or an unknown CA ends it at once).
    kafka_startup_timeout_s: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            values: dict[str, Any] = {"kafka_client": KafkaClientConfig.from_env(env)}
        except KafkaSettingError as exc:
            raise SettingsError(str(exc)) from None
        for f in fields(cls):
            if f.name not in ENV_NAMES:
                continue
            name = ENV_NAMES[f.name]
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            if f.type == "int":
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
                if values[f.name] < 0:
                    raise SettingsError(f"{name} must not be negative, got {raw!r}")
            else:
                values[f.name] = raw
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not self.postgres_url.startswith(("postgresql://", "postgres://")):
            raise SettingsError(
                f"POSTGRES_URL must be a postgresql:// URL, got {self.postgres_url!r}")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"REDIS_URL must be a redis:// URL, got {self.redis_url!r}")
        if self.redis_mode not in ("standalone", "cluster"):
            raise SettingsError("QF_REDIS_MODE must be 'standalone' or 'cluster', "
                                f"got {self.redis_mode!r}")
        if self.auth_failures_per_s < 1:
            raise SettingsError("QF_AUTH_FAILURES_PER_S must be at least 1 (0 would refuse "
                                "every key this process has not yet seen valid)")
        if self.waits_per_key < 1 or self.reads_per_s_per_key < 1:
            raise SettingsError("QF_WAITS_PER_KEY and QF_READS_PER_S_PER_KEY must be at least 1")
        try:
            networks(self.trusted_proxies)
        except ValueError as exc:
            raise SettingsError(f"QF_TRUSTED_PROXIES: {exc}") from None
        src = self.model_source
        if not (src in ("standin", "registry") or src.startswith("dir:")):
            raise SettingsError(
                f"QF_MODEL_SOURCE must be 'standin', 'registry' or 'dir:PATH', got {src!r}"
            )
        if self.batch_max < 1:
            raise SettingsError("QF_BATCH_MAX must be at least 1")
        if self.request_deadline_s <= self.redrive_after_s:
            raise SettingsError("QF_REQUEST_DEADLINE_S must be longer than QF_REDRIVE_AFTER_S")

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env = {ENV_NAMES[f.name]: str(getattr(self, f.name)) for f in fields(self)
               if f.name in ENV_NAMES}
        env.update({kafka_variable(k): v for k, v in self.kafka_client.items()})
        return env

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def inflight_slot_ttl_s(self) -> int:
        """How long a key's in-flight slot outlives a release that never came: past the
        request's deadline and the two sweeps that may pass before it is ended then."""
        return self.request_deadline_s + 2 * self.sweep_interval_s + 60


# The one list of environment variables quotaflow reads, with the KAFKA_<PROPERTY> family
# (`is_kafka_client_variable`); manifests are checked against both.
ENV_NAMES: dict[str, str] = {
    "kafka_bootstrap": "KAFKA_BOOTSTRAP_SERVERS",
    "postgres_url": "POSTGRES_URL",
    "redis_url": "REDIS_URL",
    "s3_endpoint_url": "S3_ENDPOINT_URL",
    "model_bucket": "QF_MODEL_BUCKET",
    "model_name": "QF_MODEL_NAME",
    "model_source": "QF_MODEL_SOURCE",
    "model_cache_dir": "QF_MODEL_CACHE_DIR",
    "ort_spin": "QF_ORT_SPIN",
    "standin_token_delay_ms": "QF_STANDIN_TOKEN_DELAY_MS",
    "public_url": "QF_PUBLIC_URL",
    "topic_prefix": "QF_TOPIC_PREFIX",
    "consumer_group_prefix": "QF_CONSUMER_GROUP_PREFIX",
    "kafka_session_timeout_ms": "QF_KAFKA_SESSION_TIMEOUT_MS",
    "kafka_fetch_wait_max_ms": "QF_KAFKA_FETCH_WAIT_MAX_MS",
    "kafka_linger_ms": "QF_KAFKA_LINGER_MS",
    "kafka_startup_timeout_s": "QF_KAFKA_STARTUP_TIMEOUT_S",
    "kafka_publish_timeout_ms": "QF_KAFKA_PUBLISH_TIMEOUT_MS",
    "max_body_bytes": "QF_MAX_BODY_BYTES",
    "max_prompt_chars": "QF_MAX_PROMPT_CHARS",
    "max_tokens_limit": "QF_MAX_TOKENS_LIMIT",
    "reservation_ttl_s": "QF_RESERVATION_TTL_S",
    "sweep_interval_s": "QF_SWEEP_INTERVAL_S",
    "redrive_after_s": "QF_REDRIVE_AFTER_S",
    "request_deadline_s": "QF_REQUEST_DEADLINE_S",
    "db_connect_timeout_s": "QF_DB_CONNECT_TIMEOUT_S",
    "db_statement_timeout_ms": "QF_DB_STATEMENT_TIMEOUT_MS",
    "redis_timeout_ms": "QF_REDIS_TIMEOUT_MS",
    "redis_mode": "QF_REDIS_MODE",
    "retry_backoff_max_s": "QF_RETRY_BACKOFF_MAX_S",
    "auth_cache_ms": "QF_AUTH_CACHE_MS",
    "auth_failures_per_s": "QF_AUTH_FAILURES_PER_S",
    "auth_failures_per_s_total": "QF_AUTH_FAILURES_PER_S_TOTAL",
    "waits_per_key": "QF_WAITS_PER_KEY",
    "reads_per_s_per_key": "QF_READS_PER_S_PER_KEY",
    "trusted_proxies": "QF_TRUSTED_PROXIES",
    "batch_max": "QF_BATCH_MAX",
    "batch_wait_ms": "QF_BATCH_WAIT_MS",
    "handler_retries": "QF_HANDLER_RETRIES",
    "log_level": "QF_LOG_LEVEL",
    "metrics_port": "QF_METRICS_PORT",
    "knative_idle_s": "QF_KNATIVE_IDLE_S",
    "metrics_addr": "QF_METRICS_ADDR",
}
