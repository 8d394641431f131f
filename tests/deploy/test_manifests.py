"""Every deploy artifact checked offline against the real schemas: Knative/Kafka/Strimzi
manifests against the official CRDs' openAPIV3Schema (unknown fields fail), func.yaml files
against knative/func's schema, and all of it against the one topic declaration and catalog."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import redis
import yaml

from events.catalog import EVENTS, topic_specs
from quotaflow.cli.ops import strimzi_topics
from quotaflow.devstack.stack import free_port
from quotaflow.runtime.steps import ALL_STEPS, CONSUMER_STEPS, load_step
from quotaflow.settings import ENV_NAMES
from tests.conftest import REPO

CRDS = REPO.parent / "shared" / "crds"
needs_crds = pytest.mark.skipif(not CRDS.exists(), reason="../shared/crds is not beside the repo")
# Read by boto3 itself, not by Settings: the only other names the manifests may set.
LIBRARY_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
BUILT_IN = {("v1", "ConfigMap"), ("v1", "Secret"), ("batch/v1", "Job")}
CRD_FILES = {
    ("serving.knative.dev", "Service"): "serving.knative.dev_v1_service.yaml",
    ("sources.knative.dev", "KafkaSource"): "sources.knative.dev_v1beta1-v1_kafkasource.yaml",
    ("eventing.knative.dev", "KafkaSink"): "eventing.knative.dev_v1alpha1_kafkasink.yaml",
    ("kafka.strimzi.io", "KafkaTopic"):
        "kafka.strimzi.io_v1beta2+v1_kafkatopic_strimzi-0.51.0.yaml",
}


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    files = sorted([*REPO.glob("knative/**/*.yaml"), *REPO.glob("kafka/strimzi/*.yaml"),
                    *REPO.glob("infra/k8s/*.yaml")])
    return [(f, d) for f in files if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text()) if d]


def strict(schema: Any) -> Any:
    """Unknown fields fail: every object with declared properties gets
    additionalProperties: false, unless the CRD preserves unknown fields there."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    group, _, version = api_version.rpartition("/")
    crd = next(d for d in yaml.safe_load_all((CRDS / CRD_FILES[(group, kind)]).read_text())
               if d and d.get("kind") == "CustomResourceDefinition")
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert v.get("served"), f"{api_version} {kind} is not served"
    schema: dict[str, Any] = strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    # Every Kubernetes object has these, whether or not a CRD's schema spells them out.
    for field in ("apiVersion", "kind", "metadata"):
        schema["properties"].setdefault(field, {"type": "string" if field != "metadata"
                                                else "object"})
    return schema


@needs_crds
@pytest.mark.parametrize("path, doc", manifests(),
                         ids=lambda x: x.name if isinstance(x, Path) else x.get("kind", ""))
def test_manifest_is_valid_against_its_official_schema(path: Path, doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    assert doc.get("metadata", {}).get("name"), f"{path}: no metadata.name"
    if key in BUILT_IN or doc["kind"] == "PingSource":
        return  # built-in kinds / no official CRD here: apiVersion, kind and name checked
    jsonschema.Draft7Validator(crd_schema(*key)).validate(doc)


@needs_crds
def test_strict_check_rejects_an_unknown_field() -> None:
    doc = yaml.safe_load((REPO / "knative/sources/estimate.yaml").read_text())
    doc["spec"]["topicz"] = ["typo"]
    with pytest.raises(jsonschema.ValidationError, match="topicz"):
        jsonschema.Draft7Validator(crd_schema(doc["apiVersion"], doc["kind"])).validate(doc)
    svc = yaml.safe_load((REPO / "knative/services/infer.yaml").read_text())
    svc["spec"]["template"]["spec"]["containers"][0]["envFrum"] = []
    with pytest.raises(jsonschema.ValidationError, match="envFrum"):
        jsonschema.Draft7Validator(crd_schema(svc["apiVersion"], svc["kind"])).validate(svc)


def func_yamls() -> list[Path]:
    return [REPO / "func.yaml", *sorted(REPO.glob("functions/*/func.yaml"))]


@needs_crds
@pytest.mark.parametrize("path", func_yamls(), ids=lambda p: str(p.relative_to(REPO)))
def test_func_yaml_is_valid_against_the_func_schema(path: Path) -> None:
    schema = json.loads((CRDS / "func_yaml-schema.json").read_text())
    doc = yaml.safe_load(path.read_text())
    jsonschema.Draft7Validator({**schema, "$ref": "#/definitions/Function"}).validate(doc)
    assert doc["specVersion"] == "0.36.0"
    assert doc["deploy"]["healthEndpoints"] == {"liveness": "/health/liveness",
                                                "readiness": "/health/readiness"}


@needs_crds
def test_func_schema_rejects_an_unknown_key() -> None:
    schema = json.loads((CRDS / "func_yaml-schema.json").read_text())
    doc = yaml.safe_load((REPO / "functions/infer/func.yaml").read_text())
    doc["deploy"]["scale"] = {"min": 0}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator({**schema, "$ref": "#/definitions/Function"}).validate(doc)


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] == kind]


def test_every_function_has_a_service_a_func_yaml_an_entry_and_its_sources() -> None:
    services = {d["metadata"]["name"] for d in by_kind("Service")}
    sources = by_kind("KafkaSource")
    for step in ALL_STEPS:
        assert f"quotaflow-{step}" in services, step
        assert (REPO / "functions" / step / "func.yaml").exists()
        assert (REPO / "functions" / step / "function" / "__init__.py").exists()
        assert (REPO / "functions" / step / "pyproject.toml").exists()
    for step in CONSUMER_STEPS:
        mine = [s for s in sources if s["spec"]["sink"]["ref"]["name"] == f"quotaflow-{step}"]
        topics = sorted(t for s in mine for t in s["spec"]["topics"])
        assert topics == sorted(f"quotaflow.{c}" for c in load_step(step).consumes), step
    assert not [s for s in sources if s["spec"]["sink"]["ref"]["name"] == "quotaflow-admit"]


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
    known = set(ENV_NAMES.values()) | LIBRARY_ENV
    (config,) = [d["data"] for d in by_kind("ConfigMap")
                 if d["metadata"]["name"] == "quotaflow-config"]
    (secret,) = [d["stringData"] for d in by_kind("Secret")]
    assert set(config) <= known, set(config) - known
    assert set(secret) <= known, set(secret) - known
    for path in func_yamls():
        envs = yaml.safe_load(path.read_text())["run"]["envs"]
        names = {e["name"] for e in envs}
        assert names <= known, (path, names - known)
        for e in envs:
            ref = re.fullmatch(r"\{\{ (configMap|secret):([a-z-]+):([A-Z_0-9]+) \}\}", e["value"])
            assert ref, e
            kind, _, key = ref.groups()
            assert key in (config if kind == "configMap" else secret), e
    for svc in [*by_kind("Service"), *by_kind("Job")]:
        refs = svc["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {r.get("configMapRef", r.get("secretRef"))["name"] for r in refs} == \
            {"quotaflow-config", "quotaflow-secrets"}


def test_services_scale_to_zero_and_bound_concurrency() -> None:
    for svc in by_kind("Service"):
        ann = svc["spec"]["template"]["metadata"]["annotations"]
        assert ann["autoscaling.knative.dev/min-scale"] == "0"
        assert int(ann["autoscaling.knative.dev/max-scale"]) >= 1
        assert svc["spec"]["template"]["spec"]["containerConcurrency"] >= 1


def test_build_contexts_fit_func_python_scaffolding() -> None:
    for step in ALL_STEPS:
        project = tomllib.loads((REPO / "functions" / step / "pyproject.toml").read_text())
        assert project["project"]["name"] == "function", step
        func = yaml.safe_load((REPO / "functions" / step / "func.yaml").read_text())
        assert (func["runtime"], func["invoke"]) == ("python", "http"), step
        entry = (REPO / "functions" / step / "function" / "__init__.py").read_text()
        assert f'KnativeFunction("{step}")' in entry and "def new()" in entry, step


def test_func_yaml_and_service_agree_on_scale_and_concurrency() -> None:
    services = {d["metadata"]["name"]: d for d in by_kind("Service")}
    for step in ALL_STEPS:
        options = yaml.safe_load((REPO / "functions" / step / "func.yaml").read_text())[
            "deploy"]["options"]
        template = services[f"quotaflow-{step}"]["spec"]["template"]
        ann = template["metadata"]["annotations"]
        scale = options["scale"]
        assert (str(scale["min"]), str(scale["max"]), str(scale["target"])) == (
            ann["autoscaling.knative.dev/min-scale"], ann["autoscaling.knative.dev/max-scale"],
            ann["autoscaling.knative.dev/target"]), step
        assert options["resources"]["limits"]["concurrency"] == \
            template["spec"]["containerConcurrency"], step


def test_sweep_pingsource_uses_only_pingsource_v1_fields_and_wakes_settle() -> None:
    # No PingSource CRD among ../shared/crds: its v1 spec fields, written out here.
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
    present = {str(p.relative_to(REPO / "knative")) for p in REPO.glob("knative/**/*.yaml")}
    assert listed == present - {"kustomization.yaml", "secrets.example.yaml"}


def test_infra_kustomization_lists_every_infra_manifest() -> None:
    kust = yaml.safe_load((REPO / "infra/k8s/kustomization.yaml").read_text())
    present = {p.name for p in REPO.glob("infra/k8s/*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == present
    images = {i["name"] for i in kust["images"]}
    jobs = by_kind("Job")
    assert {c["image"] for j in jobs for c in j["spec"]["template"]["spec"]["containers"]} <= images


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


def test_prometheus_operator_resources_scrape_every_step_and_carry_the_alert_rules() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(
        (REPO / "infra/monitoring/prometheus-operator.yaml").read_text())}
    assert all(d["apiVersion"] == "monitoring.coreos.com/v1" and d["metadata"]["name"]
               for d in docs.values())
    alerts = yaml.safe_load((REPO / "infra/monitoring/alerts.yml").read_text())
    assert docs["PrometheusRule"]["spec"] == alerts
    (expr,) = docs["PodMonitor"]["spec"]["selector"]["matchExpressions"]
    assert (expr["key"], set(expr["values"])) == ("app.kubernetes.io/component", set(ALL_STEPS))
    for svc in by_kind("Service"):
        assert svc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] \
            in expr["values"]


def test_dashboard_and_alerts_use_metrics_the_code_defines() -> None:
    import events.metrics
    import events.model.metrics  # noqa: F401
    from prometheus_client import REGISTRY

    names = {m.name for m in REGISTRY.collect()}
    dashboard = json.loads((REPO / "infra/monitoring/grafana-dashboard.json").read_text())
    alerts = yaml.safe_load((REPO / "infra/monitoring/alerts.yml").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    used = {m for e in exprs
            for m in re.findall(r"\b((?:qf|ml)_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", e)}
    assert used, "no metric referenced"
    assert used <= names, used - names


def test_dashboard_and_alerts_group_and_filter_only_by_labels_the_metrics_have() -> None:
    import events.metrics
    import events.model.metrics

    labels: dict[str, set[str]] = {}
    for collector in (*vars(events.metrics).values(), *vars(events.model.metrics).values()):
        if hasattr(collector, "_labelnames"):  # name without _total, as the regex below
            labels.setdefault(collector._name, set()).update(collector._labelnames)
    dashboard = json.loads((REPO / "infra/monitoring/grafana-dashboard.json").read_text())
    alerts = yaml.safe_load((REPO / "infra/monitoring/alerts.yml").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    for expr in exprs:
        metrics = set(re.findall(r"\b((?:qf|ml)_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b",
                                 expr))
        have = set().union(*(labels[m] for m in metrics)) | {"le"}
        grouped = {x.strip() for g in re.findall(r"\bby \(([^)]*)\)", expr)
                   for x in g.split(",")}
        filtered = set(re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr))
        assert grouped | filtered <= have, (expr, (grouped | filtered) - have)
