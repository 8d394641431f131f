"""Every Kubernetes manifest checked offline: Knative/Kafka/Strimzi objects against the official
CRDs' openAPIV3Schema (unknown fields fail, CRDs vendored in infra/crds), and all of it against
the one topic declaration, catalog and settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import redis
import yaml

from quotaflow.cli.ops import strimzi_topics
from quotaflow.devstack.process import free_port
from quotaflow.events.catalog import EVENTS, topic_specs
from quotaflow.settings import ENV_NAMES, is_kafka_client_variable
from tests.conftest import REPO
from tests.deploy.schemas import by_kind, crd_validator, func_yamls, k8s_validate, manifests

# Read by boto3 itself, not by Settings: the only other names the manifests may set.
LIBRARY_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
BUILT_IN = {("v1", "ConfigMap"), ("v1", "Secret"), ("batch/v1", "Job"), ("apps/v1", "Deployment"),
            ("networking.k8s.io/v1", "NetworkPolicy")}


@pytest.mark.parametrize("path, doc", manifests(),
                         ids=lambda x: x.name if isinstance(x, Path) else x.get("kind", ""))
def test_manifest_is_valid_against_its_official_schema(path: Path, doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    assert doc.get("metadata", {}).get("name"), f"{path}: no metadata.name"
    if key in BUILT_IN:
        k8s_validate(doc)  # Kubernetes' own schema
    elif doc["kind"] != "PingSource":  # no official CRD here: apiVersion, kind, name checked
        crd_validator(*key).validate(doc)


def test_kubernetes_schema_check_rejects_an_unknown_field() -> None:
    deployment = by_kind("Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] \
        = True
    with pytest.raises(Exception, match="runAsNonroot"):
        k8s_validate(deployment)


def test_strict_check_rejects_an_unknown_field() -> None:
    doc = yaml.safe_load((REPO / "knative/sources/estimate.yaml").read_text())
    doc["spec"]["topicz"] = ["typo"]
    with pytest.raises(jsonschema.ValidationError, match="topicz"):
        crd_validator(doc["apiVersion"], doc["kind"]).validate(doc)
    svc = yaml.safe_load((REPO / "knative/services/infer.yaml").read_text())
    svc["spec"]["template"]["spec"]["containers"][0]["envFrum"] = []
    with pytest.raises(jsonschema.ValidationError, match="envFrum"):
        crd_validator(svc["apiVersion"], svc["kind"]).validate(svc)


def test_every_source_reads_a_declared_topic_and_dead_letters_to_its_own_dlq() -> None:
    declared = {f"quotaflow.{t.name}" for t in topic_specs()}
    sinks = {d["metadata"]["name"]: d["spec"]["topic"] for d in by_kind("KafkaSink")}
    for source in by_kind("KafkaSource"):
        (topic,) = source["spec"]["topics"]
        assert topic in declared
        dls = source["spec"]["delivery"]["deadLetterSink"]["ref"]["name"]
        assert sinks[dls] == topic + ".dlq"
        assert source["spec"]["ordering"] == "ordered"
    assert set(sinks.values()) <= declared


def test_sources_and_sinks_use_the_functions_kafka_and_topic_prefix() -> None:
    (config,) = [d["data"] for d in by_kind("ConfigMap")
                 if d["metadata"]["name"] == "quotaflow-config"]
    assert config["QF_TOPIC_PREFIX"] == "quotaflow."  # the prefix the manifests spell out
    for d in [*by_kind("KafkaSource"), *by_kind("KafkaSink")]:
        assert d["spec"]["bootstrapServers"] == [config["KAFKA_BOOTSTRAP_SERVERS"]], \
            d["metadata"]["name"]


def test_every_event_type_has_a_declared_topic_and_strimzi_resource() -> None:
    strimzi = {d["spec"]["topicName"] for d in by_kind("KafkaTopic")}
    for event in EVENTS.values():
        assert f"quotaflow.{event.topic}" in strimzi
        assert f"quotaflow.{event.topic}.dlq" in strimzi


def test_committed_strimzi_topics_are_the_generators_output() -> None:
    assert (REPO / "kafka/strimzi/topics.yaml").read_text() == strimzi_topics()


def test_manifests_set_only_environment_variables_the_settings_read() -> None:
    # The settings' names, boto3's, and any librdkafka property (KAFKA_<PROPERTY>).
    named = set(ENV_NAMES.values()) | LIBRARY_ENV
    known = named | {n for _, d in manifests() for n in _env_names(d)
                     if is_kafka_client_variable(n)}
    (config,) = [d["data"] for d in by_kind("ConfigMap")
                 if d["metadata"]["name"] == "quotaflow-config"]
    (secret,) = [d["stringData"] for d in by_kind("Secret")
                 if d["metadata"]["name"] == "quotaflow-secrets"]
    assert set(config) <= known, set(config) - known
    assert set(secret) <= known, set(secret) - known
    for path in func_yamls():
        envs = yaml.safe_load(path.read_text())["run"]["envs"]
        names = {e["name"] for e in envs}
        assert names <= known, (path, names - known)
        for e in envs:
            if e["name"] == "KAFKA_SASL_USERNAME":
                continue  # a literal: the function's Kafka user (test_kafka_users.py)
            ref = re.fullmatch(r"\{\{ (configMap|secret):([a-z-]+):([A-Za-z_0-9.]+) \}\}",
                               e["value"])
            assert ref, e
            kind, name, key = ref.groups()
            if name in ("quotaflow-config", "quotaflow-secrets"):
                assert key in (config if kind == "configMap" else secret), e
            else:  # Strimzi's Secrets: a Kafka user's password, the cluster CA
                assert (kind, e["name"]) in {("secret", "KAFKA_SASL_PASSWORD"),
                                             ("secret", "KAFKA_SSL_CA_PEM")}, e
    for svc in [*by_kind("Service"), *by_kind("Job"), *by_kind("Deployment")]:
        refs = svc["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {r.get("configMapRef", r.get("secretRef"))["name"] for r in refs} == \
            {"quotaflow-config", "quotaflow-secrets"}
        names = set(_env_names(svc))
        assert names <= known, (svc["metadata"]["name"], names - known)


def _env_names(doc: dict[str, Any]) -> list[str]:
    """The variables a workload sets one by one (`env`), or a ConfigMap holds."""
    if doc["kind"] == "ConfigMap":
        return list(doc.get("data", {}))
    template = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [e["name"] for c in template.get("containers", []) for e in c.get("env", [])]


def test_services_scale_to_zero_and_bound_concurrency() -> None:
    for svc in by_kind("Service"):
        ann = svc["spec"]["template"]["metadata"]["annotations"]
        assert ann["autoscaling.knative.dev/min-scale"] == "0"
        assert int(ann["autoscaling.knative.dev/max-scale"]) >= 1
        assert svc["spec"]["template"]["spec"]["containerConcurrency"] >= 1


def test_sweep_pingsource_uses_only_pingsource_v1_fields_and_wakes_settle() -> None:
    # No PingSource CRD among infra/crds: its v1 spec fields, written out here.
    (ping,) = by_kind("PingSource")
    assert ping["apiVersion"] == "sources.knative.dev/v1"
    fields = {"schedule", "timezone", "contentType", "data", "dataBase64", "sink", "ceOverrides"}
    assert set(ping["spec"]) <= fields, set(ping["spec"]) - fields
    assert len(ping["spec"]["schedule"].split()) == 5
    assert json.loads(ping["spec"]["data"]) and ping["spec"]["contentType"] == "application/json"
    ref = ping["spec"]["sink"]["ref"]
    assert set(ref) <= {"apiVersion", "kind", "name", "namespace"}
    services = {d["metadata"]["name"] for d in by_kind("Service")}
    assert (ref["apiVersion"], ref["kind"]) == ("serving.knative.dev/v1", "Service")
    assert ref["name"] == "quotaflow-settle" and ref["name"] in services


def test_kustomization_lists_every_knative_manifest_but_the_example_secret() -> None:
    kust = yaml.safe_load((REPO / "knative/kustomization.yaml").read_text())
    listed = set(kust["resources"])
    present = {str(p.relative_to(REPO / "knative")) for p in REPO.glob("knative/**/*.yaml")
               if p.relative_to(REPO / "knative").parts[0] != "overlays"}
    assert listed == present - {"kustomization.yaml", "secrets.example.yaml"}
    assert "components" not in kust  # the GPU component is switched on by the deployer


def test_infra_kustomization_lists_every_infra_manifest() -> None:
    kust = yaml.safe_load((REPO / "infra/k8s/kustomization.yaml").read_text())
    present = {p.name for p in REPO.glob("infra/k8s/*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == present
    images = {i["name"] for i in kust["images"]}
    runs = [*by_kind("Job"), *by_kind("Deployment")]
    assert {c["image"] for j in runs for c in j["spec"]["template"]["spec"]["containers"]} <= images


def test_the_analytics_consumer_runs_always_as_one_deployment_of_its_cli_command() -> None:
    (deployment,) = [d for d in by_kind("Deployment")
                     if d["metadata"]["name"] == "quotaflow-analytics"]
    spec = deployment["spec"]
    # KEDA sets the replicas (at least one: test_cluster.py); an apply must not reset them.
    assert "replicas" not in spec
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    assert container["command"][-4:] == ["-m", "quotaflow", "analytics", "run"]


def test_the_alerts_run_always_as_one_replica_of_their_cli_command() -> None:
    (deployment,) = [d for d in by_kind("Deployment")
                     if d["metadata"]["name"] == "quotaflow-alerts"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "alerts"
    (container,) = spec["template"]["spec"]["containers"]
    assert container["command"][-4:] == ["-m", "quotaflow", "alerts", "run"]


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")
def test_redis_config_is_accepted_by_redis_and_never_evicts_the_projection(
        tmp_path: Path) -> None:
    (doc,) = [d for d in by_kind("ConfigMap") if d["metadata"]["name"] == "quotaflow-redis"]
    conf = tmp_path / "redis.conf"
    conf.write_text(doc["data"]["redis.conf"])
    port = free_port()
    server = subprocess.Popen(["redis-server", str(conf), "--port", str(port), "--bind",
                               "127.0.0.1", "--dir", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert server.poll() is None, server.communicate()[0].decode()[-2000:]
                assert time.monotonic() < deadline, "redis never answered"
                time.sleep(0.05)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
    finally:
        server.terminate()
        server.wait(10)


def test_services_time_out_as_the_code_says_and_the_door_answers_before() -> None:
    # One place (quotaflow/runtime/timeouts.py) for every Service's time-outs; the door's
    # longest wait, and what a stream sends after it, end before Knative cuts the call.
    from quotaflow.runtime import timeouts
    from quotaflow.runtime.door.openai_api.relay import Timing
    from quotaflow.runtime.door.openai_api.routes import FIRST_WAIT_S
    from quotaflow.runtime.door.openai_api.service import USAGE_WAIT_S
    from quotaflow.settings import Settings

    (config,) = [d["data"] for d in by_kind("ConfigMap")
                 if d["metadata"]["name"] == "quotaflow-config"]
    deployed = Settings.from_env({"QF_REQUEST_DEADLINE_S": config["QF_REQUEST_DEADLINE_S"]})
    for svc in by_kind("Service"):
        spec = svc["spec"]["template"]["spec"]
        assert spec["timeoutSeconds"] == timeouts.TIMEOUT_S, svc["metadata"]["name"]
        assert spec["responseStartTimeoutSeconds"] == timeouts.RESPONSE_START_TIMEOUT_S
    longest = timeouts.door_wait_s(deployed)
    assert Timing().total_s == longest == timeouts.DOOR_LONGEST_WAIT_S
    assert longest + USAGE_WAIT_S < timeouts.TIMEOUT_S  # a stream, to its usage chunk
    assert longest < timeouts.RESPONSE_START_TIMEOUT_S  # a call that does not stream
    assert FIRST_WAIT_S < timeouts.RESPONSE_START_TIMEOUT_S  # a stream's headers
