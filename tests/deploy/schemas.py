"""The deploy manifests and the official schemas they are checked against: the CRDs and
knative/func's func.yaml schema vendored in infra/crds (see its SOURCES.tsv)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml

from tests.conftest import REPO

CRDS = REPO / "infra" / "crds"
CRD_FILES = {
    ("serving.knative.dev", "Service"): "serving.knative.dev_v1_service.yaml",
    ("sources.knative.dev", "KafkaSource"): "sources.knative.dev_v1beta1-v1_kafkasource.yaml",
    ("eventing.knative.dev", "KafkaSink"): "eventing.knative.dev_v1alpha1_kafkasink.yaml",
    ("kafka.strimzi.io", "KafkaTopic"):
        "kafka.strimzi.io_v1beta2+v1_kafkatopic_strimzi-0.51.0.yaml",
    ("kafka.strimzi.io", "KafkaUser"):
        "kafka.strimzi.io_v1beta2+v1_kafkauser_strimzi-0.51.0.yaml",
    ("keda.sh", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.yaml",
    ("keda.sh", "TriggerAuthentication"): "keda.sh_v1alpha1_triggerauthentication.yaml",
}
# Kubernetes' own schema (kubernetes-validate) for the built-in kinds, at this version.
KUBERNETES_VERSION = "1.33.0"
FUNC_SCHEMA = "func_yaml-schema.json"


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object the repository declares, with its file (not the kustomize
    patches under knative/overlays: test_cluster.py renders those). Fresh copies: a test may
    change what it gets."""
    return copy.deepcopy(_manifests())


@functools.cache
def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    files = sorted([*REPO.glob("knative/**/*.yaml"), *REPO.glob("kafka/strimzi/*.yaml"),
                    *REPO.glob("infra/k8s/*.yaml")])
    files = [f for f in files if "overlays" not in f.relative_to(REPO).parts]
    return [(f, d) for f in files if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text()) if d]


def k8s_validate(doc: dict[str, Any]) -> None:
    """Check a built-in kind against Kubernetes' own OpenAPI schema, unknown fields failing."""
    import kubernetes_validate  # type: ignore[import-untyped]

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def by_kind(kind: str) -> list[dict[str, Any]]:
    """The declared objects of one kind."""
    return [d for _, d in manifests() if d["kind"] == kind]


def func_yamls() -> list[Path]:
    """The root func.yaml and every step's."""
    return [REPO / "func.yaml", *sorted(REPO.glob("functions/*/func.yaml"))]


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


def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    """A strict validator for one served version of an official CRD."""
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
    return jsonschema.Draft7Validator(schema)


def func_validator() -> jsonschema.Draft7Validator:
    """knative/func's schema for a whole func.yaml."""
    schema = json.loads((CRDS / FUNC_SCHEMA).read_text())
    return jsonschema.Draft7Validator({**schema, "$ref": "#/definitions/Function"})


# What every container must run with (tests/deploy/test_cluster.py).
LOCKED_DOWN = {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
               "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}}
# RevisionSpec fields beside the PodSpec's.
KNATIVE_ONLY = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds",
                "idleTimeoutSeconds")


def name(doc: dict[str, Any]) -> str:
    """An object's name (also the test ids)."""
    return str(doc["metadata"]["name"])


def as_pod(service: dict[str, Any]) -> dict[str, Any]:
    """A Knative Service's revision template as the Pod Knative makes of it: without the
    RevisionSpec's own fields, probes on the serving port (Knative fills it in)."""
    template = copy.deepcopy(service["spec"]["template"])
    spec = template["spec"]
    for field in KNATIVE_ONLY:
        spec.pop(field, None)
    for container in spec["containers"]:
        port = container["ports"][0]["containerPort"]
        for probe in ("readinessProbe", "livenessProbe"):
            if "httpGet" in container.get(probe, {}):
                container[probe]["httpGet"].setdefault("port", port)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name(service), **template.get("metadata", {})}, "spec": spec}
