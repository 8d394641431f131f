"""What a cluster expects of the manifests: locked-down containers that write only to emptyDirs,
NetworkPolicies that let in only Knative's data plane (and the scraper, on the metrics port) and
out only to the backing services, metrics on a port no route exposes, credentials only from
Secrets, the analytics consumer scaled by KEDA on its lag, and infer's GPU component. Each Knative
Service's PodSpec is also checked against Kubernetes' own Pod schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from quotaflow.analytics.consumer import TOPICS as ANALYTICS_TOPICS
from quotaflow.deploy.kafka_users import user_name
from quotaflow.deploy.sizing import (
    FROM_SECRET,
    LIBRARY_SECRETS,
    SIZING,
    TOKENIZER_DEPENDENCIES,
)
from quotaflow.events.catalog import topic_specs
from quotaflow.runtime.steps import ALL_STEPS
from quotaflow.settings import ENV_NAMES
from tests.conftest import REPO
from tests.deploy.schemas import (
    LOCKED_DOWN,
    as_pod,
    by_kind,
    func_yamls,
    k8s_validate,
    manifests,
    name,
)

KNATIVE_DATA_PLANE = {"knative-serving", "kourier-system"}
# Ports queue-proxy and Knative keep for themselves in every revision's pod.
KNATIVE_RESERVED_PORTS = {8012, 8013, 8022, 8112, 9090, 9091}
NAMESPACE_KEY = "kubernetes.io/metadata.name"


def config() -> dict[str, str]:
    (data,) = [d["data"] for d in by_kind("ConfigMap")
               if d["metadata"]["name"] == "quotaflow-config"]
    return dict(data)


def workloads() -> list[dict[str, Any]]:
    """Every object that runs a pod: the Knative Services, the Deployment, the Job."""
    return [*by_kind("Service"), *by_kind("Deployment"), *by_kind("Job")]


@pytest.mark.parametrize("workload", workloads(), ids=name)
def test_every_container_is_locked_down_and_writes_only_to_emptydirs(
        workload: dict[str, Any]) -> None:
    spec = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for container in spec["containers"]:
        assert container["securityContext"] == LOCKED_DOWN, name(workload)
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, name(workload)
        for volume in mounts.values():
            assert set(volumes[volume]) == {"name", "emptyDir"}, (name(workload), volume)
            assert volumes[volume]["emptyDir"].get("sizeLimit"), (name(workload), volume)
    if workload["kind"] == "Service":
        # Knative takes a pod-level securityContext only behind a feature flag.
        assert "securityContext" not in spec
    else:
        assert spec["automountServiceAccountToken"] is False


def test_the_steps_that_load_the_model_write_its_cache_to_an_emptydir() -> None:
    cache = Path(config()["QF_MODEL_CACHE_DIR"])
    loaders = {step for step in ALL_STEPS
               if set(TOKENIZER_DEPENDENCIES) <= set(SIZING[step].extra_dependencies)}
    assert loaders == {"estimate", "infer"}
    for svc in by_kind("Service"):
        (container,) = svc["spec"]["template"]["spec"]["containers"]
        mounted = [Path(m["mountPath"]) for m in container["volumeMounts"]]
        covered = [m for m in mounted if cache.is_relative_to(m) and m != Path("/tmp")]
        step = svc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        assert bool(covered) == (step in loaders), step


@pytest.mark.parametrize("service", by_kind("Service"), ids=name)
def test_knative_podspec_is_valid_against_kubernetes_pod_schema(service: dict[str, Any]) -> None:
    k8s_validate(as_pod(service))


@pytest.mark.parametrize("workload", workloads(), ids=name)
def test_metrics_are_on_their_own_port_that_no_container_declares(
        workload: dict[str, Any]) -> None:
    cfg = config()
    port = int(cfg["QF_METRICS_PORT"])
    assert cfg["QF_METRICS_ADDR"] == "0.0.0.0"  # reachable by the scraper, in the pod only
    assert port not in KNATIVE_RESERVED_PORTS
    template = workload["spec"]["template"]
    declared = [p["containerPort"] for c in template["spec"]["containers"]
                for p in c.get("ports", [])]
    assert port not in declared
    if workload["kind"] == "Service":
        assert declared == [8080]  # Knative serves (and routes) one port
    if workload["kind"] != "Job":  # `quotaflow migrate` serves no metrics
        ann = template["metadata"]["annotations"]
        assert (ann["prometheus.io/scrape"], ann["prometheus.io/port"]) == ("true", str(port))


def _policies() -> dict[str, dict[str, Any]]:
    return {name(p): p["spec"] for p in by_kind("NetworkPolicy")}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels, In-expressions) selects pods with `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In", e
        if labels.get(e["key"]) not in e["values"]:
            return False
    return True


def _namespaces(peer: dict[str, Any]) -> set[str]:
    """The namespaces a peer's namespaceSelector names by kubernetes.io/metadata.name."""
    sel = peer["namespaceSelector"]
    names = {v for k, v in sel.get("matchLabels", {}).items() if k == NAMESPACE_KEY}
    for e in sel.get("matchExpressions", []):
        assert (e["key"], e["operator"]) == (NAMESPACE_KEY, "In"), e
        names |= set(e["values"])
    assert names and set(sel.get("matchLabels", {})) <= {NAMESPACE_KEY}, sel
    return names


def test_every_quotaflow_pod_is_denied_all_but_what_the_policies_allow() -> None:
    policies = _policies()
    deny = policies["quotaflow-default-deny"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert _selects(deny["podSelector"], labels), name(workload)


def test_ingress_only_from_knatives_data_plane_and_the_scraper_on_the_metrics_port() -> None:
    metrics_port = int(config()["QF_METRICS_PORT"])
    pods = {name(w): w["spec"]["template"]["metadata"]["labels"] for w in workloads()}
    reach: dict[str, set[str]] = {n: set() for n in pods}
    for policy in _policies().values():
        for rule in policy.get("ingress", []):
            assert rule.get("from"), "a rule with no `from` lets in every source"
            for peer in rule["from"]:
                assert set(peer) == {"namespaceSelector"}, peer  # no ipBlock, no same-namespace
                namespaces = _namespaces(peer)
                if namespaces <= KNATIVE_DATA_PLANE:
                    opened = "knative"
                else:  # the scraper: only the metrics port
                    assert [(p["protocol"], p["port"]) for p in rule["ports"]] == \
                        [("TCP", metrics_port)], rule
                    opened = "metrics"
                for n, labels in pods.items():
                    if _selects(policy["podSelector"], labels):
                        reach[n].add(opened)
    for n, opened in reach.items():
        function = n.removeprefix("quotaflow-") in ALL_STEPS and \
            n in {name(s) for s in by_kind("Service")}
        assert opened == ({"knative", "metrics"} if function else {"metrics"}), n


def test_only_the_door_has_a_route_from_outside_the_cluster() -> None:
    public = [name(s) for s in by_kind("Service")
              if s["metadata"]["labels"].get("networking.knative.dev/visibility")
              != "cluster-local"]
    assert public == ["quotaflow-admit"]


def test_egress_only_to_dns_kafka_postgres_redis_and_s3() -> None:
    kafka_port = int(config()["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    allowed = {53: "dns", kafka_port: "kafka", 5432: "postgres", 6379: "redis", 443: "s3"}
    seen = set()
    for policy in _policies().values():
        for rule in policy.get("egress", []):
            ports = {p["port"] for p in rule["ports"]}  # no rule without ports
            assert ports <= set(allowed), ports
            seen |= {allowed[p] for p in ports}
            for peer in rule.get("to", []):
                assert "ipBlock" not in peer or peer["ipBlock"]["cidr"] != "0.0.0.0/0"
            if ports == {53}:
                assert {p["protocol"] for p in rule["ports"]} == {"UDP", "TCP"}
                (peer,) = rule["to"]
                assert _namespaces(peer) == {"kube-system"}
            if kafka_port in ports:
                (peer,) = rule["to"]
                assert _namespaces(peer) == {"kafka"}  # Strimzi's namespace, as the bootstrap
                assert config()["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0].endswith(".kafka")
    assert seen == set(allowed.values())


# Settings and library variables that hold credentials (PostgreSQL and Redis URLs carry them).
SECRET_ENV = ({ENV_NAMES[f] for f in FROM_SECRET} | set(LIBRARY_SECRETS)
              | {"KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PEM"})
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|_KEY\b", re.I)
USERINFO = re.compile(r"://[^/\s:@]+:[^/\s@]+@")  # a URL with user:password


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_credentials_come_only_from_secrets() -> None:
    applied = [(p, d) for p, d in manifests() if p.name != "secrets.example.yaml"]
    for path, doc in applied:
        assert not [s for s in _strings(doc) if USERINFO.search(s)], path
        if doc["kind"] == "ConfigMap":
            assert not [k for k in doc["data"] if k in SECRET_ENV or SECRET_NAME.search(k)]
        if doc["kind"] == "Secret":  # applied Secrets carry names and modes, never a secret
            keys = [*doc.get("stringData", {}), *doc.get("data", {})]
            assert not [k for k in keys if SECRET_NAME.search(k)], (path, keys)
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] in SECRET_ENV or SECRET_NAME.search(env["name"]):
                    assert set(env) == {"name", "valueFrom"}, (name(workload), env)
                    assert set(env["valueFrom"]) == {"secretKeyRef"}, (name(workload), env)
    for path in func_yamls():
        for env in yaml.safe_load(path.read_text())["run"]["envs"]:
            if env["name"] in SECRET_ENV or SECRET_NAME.search(env["name"]):
                assert re.fullmatch(r"\{\{ secret:[a-z-]+:[A-Za-z_0-9.]+ \}\}", env["value"]), \
                    (path, env)
    # The example Secret is not applied (test_manifests.py) and holds only placeholders.
    example = yaml.safe_load((REPO / "knative/secrets.example.yaml").read_text())
    for value in example["stringData"].values():
        assert re.search(r"USER:PASSWORD@|CHANGE-ME|HOST|S3-ENDPOINT", value), value


def test_analytics_is_scaled_by_keda_on_its_groups_lag_as_its_own_kafka_user() -> None:
    (deployment,) = [d for d in by_kind("Deployment")
                     if d["metadata"]["name"] == "quotaflow-analytics"]
    (scaled,) = by_kind("ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": name(deployment)}
    partitions = {f"quotaflow.{t.name}": t.partitions for t in topic_specs()}
    read = [f"quotaflow.{t}" for t in ANALYTICS_TOPICS]
    # Never zero (the roll-ups stay fresh), never more than the partitions there are to share.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= \
        max(partitions[t] for t in read)
    (auth,) = by_kind("TriggerAuthentication")
    cfg = config()
    assert sorted(t["metadata"]["topic"] for t in spec["triggers"]) == sorted(read)
    for trigger in spec["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["bootstrapServers"] == cfg["KAFKA_BOOTSTRAP_SERVERS"]
        assert meta["consumerGroup"] == "quotaflow-analytics"  # the consumer's own group
        assert int(meta["lagThreshold"]) >= 1
        assert trigger["authenticationRef"] == {"name": name(auth)}
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs["password"] == (user_name("analytics"), "password")  # Strimzi's Secret
    assert refs["ca"] == ("quotaflow-cluster-ca-cert", "ca.crt")
    (keda,) = [d["stringData"] for d in by_kind("Secret") if name(d) == refs["sasl"][0]]
    assert keda[refs["username"][1]] == user_name("analytics")
    assert (keda[refs["sasl"][1]], cfg["KAFKA_SASL_MECHANISMS"]) == ("scram_sha512",
                                                                     "SCRAM-SHA-512")
    assert keda[refs["tls"][1]] == "enable" and cfg["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"


def test_the_consumer_group_keda_reads_is_the_analytics_consumers() -> None:
    from quotaflow.analytics.consumer import STEP
    from quotaflow.settings import Settings

    (scaled,) = by_kind("ScaledObject")
    group = f"{Settings().consumer_group_prefix}{STEP}"
    assert {t["metadata"]["consumerGroup"] for t in scaled["spec"]["triggers"]} == {group}
