"""infer's GPU component (knative/overlays/gpu): infer's Service with the image built from
functions/infer-gpu, one GPU, a GPU node and the toleration of its taint; still valid against
Knative's CRD and Kubernetes' Pod schema, sized as the sizing table's variant says."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from quotaflow.deploy.sizing import VARIANTS
from quotaflow.runtime.steps import ALL_STEPS
from tests.conftest import REPO
from tests.deploy.schemas import LOCKED_DOWN, as_pod, by_kind, crd_validator, k8s_validate, name

GPU = REPO / "knative/overlays/gpu"


def _apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 `add` and `replace` on object members and list indexes (all the patch uses)."""
    out = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] in ("add", "replace"), op
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].split("/")[1:]]
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        else:
            assert op["op"] == "add" or last in node, op
            node[last] = copy.deepcopy(op["value"])
    return out


def _gpu_infer() -> dict[str, Any]:
    kust = yaml.safe_load((GPU / "kustomization.yaml").read_text())
    assert kust["kind"] == "Component"
    (patch,) = kust["patches"]
    assert patch["target"] == {"group": "serving.knative.dev", "version": "v1",
                               "kind": "Service", "name": "quotaflow-infer"}
    ops = yaml.safe_load((GPU / patch["path"]).read_text())
    (infer,) = [s for s in by_kind("Service") if name(s) == "quotaflow-infer"]
    return _apply_json_patch(infer, ops)


def _check_gpu_infer(svc: dict[str, Any], image: str) -> None:
    crd_validator(svc["apiVersion"], svc["kind"]).validate(svc)
    k8s_validate(as_pod(svc))
    template = svc["spec"]["template"]
    spec = template["spec"]
    (container,) = spec["containers"]
    assert container["image"] == image
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        spec["tolerations"]
    assert container["securityContext"] == LOCKED_DOWN  # the rest of the Service unchanged
    # As functions/infer-gpu/func.yaml (the sizing table's variant) says.
    (variant,) = [v for v, spec_ in VARIANTS.items() if spec_.step == "infer"]
    sizing = VARIANTS[variant].sizing
    ann = template["metadata"]["annotations"]
    assert (ann["autoscaling.knative.dev/min-scale"], ann["autoscaling.knative.dev/max-scale"],
            ann["autoscaling.knative.dev/target"]) == (
        str(sizing.scale_min), str(sizing.scale_max), str(sizing.target))
    assert spec["containerConcurrency"] == sizing.concurrency
    res = container["resources"]
    assert (res["requests"]["cpu"], res["limits"]["cpu"]) == sizing.cpu
    assert (res["requests"]["memory"], res["limits"]["memory"]) == sizing.memory


def test_gpu_component_asks_for_a_gpu_on_a_gpu_node_and_stays_valid() -> None:
    _check_gpu_infer(_gpu_infer(), "quotaflow-infer-gpu")
    # The parent maps the image name: a component's own list would run before the parent's,
    # which then could not find the name to set the deployer's registry and tag.
    assert "images" not in yaml.safe_load((GPU / "kustomization.yaml").read_text())
    parent = yaml.safe_load((REPO / "knative/kustomization.yaml").read_text())
    assert "quotaflow-infer-gpu" in {i["name"] for i in parent["images"]}


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (its kustomize) not installed")
def test_gpu_component_renders_with_kustomize(tmp_path: Path) -> None:
    base = tmp_path / "knative"
    shutil.copytree(REPO / "knative", base)
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    kust["components"] = ["overlays/gpu"]  # as `kustomize edit add component` and
    for image in kust["images"]:  # `kustomize edit set image` leave it
        if image["name"] == "quotaflow-infer-gpu":
            image.update(newName="REGISTRY2/quotaflow-infer-gpu", newTag="t1")
    (base / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    out = subprocess.run(["kubectl", "kustomize", str(base)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (infer,) = [d for d in docs if d["kind"] == "Service" and name(d) == "quotaflow-infer"]
    _check_gpu_infer(infer, "REGISTRY2/quotaflow-infer-gpu:t1")
    others = [d for d in docs if d["kind"] == "Service" and name(d) != "quotaflow-infer"]
    assert len(others) == len(ALL_STEPS) - 1
    assert all("nvidia.com/gpu" not in str(d) for d in others)
