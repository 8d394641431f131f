"""The Knative functions' own files: generated from quotaflow/deploy (the committed ones are its
output), valid against knative/func's schema, in step with the Services, fit for func's Python
scaffolding; and the vendored schemas themselves are the files SOURCES.tsv names."""

from __future__ import annotations

import csv
import hashlib
import tomllib
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from quotaflow.deploy.context import prepare
from quotaflow.deploy.generate import stale, write
from quotaflow.deploy.sizing import VARIANTS
from quotaflow.runtime.knative import KnativeFunction
from quotaflow.runtime.steps import ALL_STEPS, CONSUMER_STEPS, load_step
from tests.conftest import REPO
from tests.deploy.schemas import CRDS, by_kind, func_validator, func_yamls


def test_committed_function_files_are_the_generators_output() -> None:
    assert stale(REPO) == [], "run `quotaflow func generate` and commit the result"


def test_generate_check_names_a_hand_edited_and_a_missing_file(tmp_path: Path) -> None:
    assert len(write(tmp_path)) == 2 + 4 * (len(ALL_STEPS) + len(VARIANTS))
    assert stale(tmp_path) == []
    edited = tmp_path / "functions/infer/func.yaml"
    edited.write_text(edited.read_text() + "# edited by hand\n")
    (tmp_path / "functions/admit/app.py").unlink()
    changed = ["functions/admit/app.py", "functions/infer/func.yaml"]
    assert sorted(stale(tmp_path)) == changed
    assert sorted(write(tmp_path)) == changed
    assert stale(tmp_path) == []


@pytest.mark.parametrize("path", func_yamls(), ids=lambda p: str(p.relative_to(REPO)))
def test_func_yaml_is_valid_against_the_func_schema(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    func_validator().validate(doc)
    assert doc["specVersion"] == "0.36.0"
    assert doc["deploy"]["healthEndpoints"] == {"liveness": "/health/liveness",
                                                "readiness": "/health/readiness"}


def test_func_schema_rejects_an_unknown_key() -> None:
    doc = yaml.safe_load((REPO / "functions/infer/func.yaml").read_text())
    doc["deploy"]["scale"] = {"min": 0}
    with pytest.raises(jsonschema.ValidationError):
        func_validator().validate(doc)


def test_every_function_has_a_service_and_every_consumer_its_sources() -> None:
    services = {d["metadata"]["name"] for d in by_kind("Service")}
    sources = by_kind("KafkaSource")
    for step in ALL_STEPS:
        assert f"quotaflow-{step}" in services, step
    for step in CONSUMER_STEPS:
        mine = [s for s in sources if s["spec"]["sink"]["ref"]["name"] == f"quotaflow-{step}"]
        topics = sorted(t for s in mine for t in s["spec"]["topics"])
        assert topics == sorted(f"quotaflow.{c}" for c in load_step(step).consumes), step
    assert not [s for s in sources if s["spec"]["sink"]["ref"]["name"] == "quotaflow-admit"]


def test_build_contexts_fit_func_python_scaffolding() -> None:
    contexts = {**{step: step for step in ALL_STEPS}, **{v: VARIANTS[v].step for v in VARIANTS}}
    for context, step in contexts.items():
        project = tomllib.loads((REPO / "functions" / context / "pyproject.toml").read_text())
        assert project["project"]["name"] == "function", context
        func = yaml.safe_load((REPO / "functions" / context / "func.yaml").read_text())
        assert (func["runtime"], func["invoke"]) == ("python", "http"), context
        assert func["name"] == f"quotaflow-{step}", context  # the step's one Knative Service
        entry = (REPO / "functions" / context / "function" / "__init__.py").read_text()
        assert f'KnativeFunction("{step}")' in entry and "def new()" in entry, context


def test_the_gpu_build_context_installs_onnxruntime_gpu_and_never_onnxruntime() -> None:
    def runtimes(context: str) -> set[str]:
        deps = tomllib.loads((REPO / "functions" / context / "pyproject.toml").read_text())[
            "project"]["dependencies"]
        return {d.split(">")[0].split("[")[0] for d in deps if d.startswith("onnxruntime")}

    assert runtimes("infer") == {"onnxruntime"}
    assert runtimes("infer-gpu") == {"onnxruntime-gpu"}
    deps = tomllib.loads((REPO / "functions/infer-gpu/pyproject.toml").read_text())[
        "project"]["dependencies"]
    assert any(d.startswith("onnxruntime-gpu[cuda,cudnn]") for d in deps)  # CUDA from wheels


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
        # The entry runs as many requests at once as Knative lets in (asgi_bridge's pool).
        assert KnativeFunction(step).concurrency == template["spec"]["containerConcurrency"]


def test_prepare_copies_the_shared_code_as_the_one_package_quotaflow(tmp_path: Path) -> None:
    (tmp_path / "functions" / "record").mkdir(parents=True)
    context = prepare("record", root=tmp_path)
    package = context / "quotaflow"
    for step in ALL_STEPS:
        own = sorted(p.name for p in (REPO / "functions" / step).glob("*.py"))
        assert sorted(p.name for p in (package / "functions" / step).glob("*.py")) == own
    assert (package / "functions" / "__init__.py").is_file()
    assert (package / "runtime" / "knative.py").is_file()
    assert (package / "events" / "catalog.py").is_file()
    for data in ("schemas", "migrations", "redis", "topics.yaml"):
        assert (package / "events" / "_data" / data).exists(), data
    # Beside function/ only quotaflow/: no top-level `events` or `functions`.
    assert {p.name for p in context.iterdir() if p.is_dir()} == {"quotaflow"}
    # The symlinks were not followed: no step folder (with its func.yaml) and no nested copy.
    assert not list(package.rglob("func.yaml"))
    assert not (package / "functions" / "record" / "quotaflow").exists()
    assert not list(context.rglob("__pycache__"))


def test_vendored_schemas_are_the_files_sources_tsv_names() -> None:
    with (CRDS / "SOURCES.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    vendored = {p.name for p in CRDS.iterdir()} - {"SOURCES.tsv", "README.md"}
    assert {r["file"] for r in rows} == vendored
    for r in rows:
        assert r["source_url"].startswith("https://raw.githubusercontent.com/"), r
        assert r["version"] and r["licence"] == "Apache-2.0", r
        assert hashlib.sha256((CRDS / r["file"]).read_bytes()).hexdigest() == r["sha256"], r
