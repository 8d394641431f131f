"""The S3 model registry against a moto server (real HTTP): checksums are enforced, an alias
promotion switches the version infer uses without a restart, a canary weight splits traffic."""

from __future__ import annotations

import json
import math
import shutil
import uuid
from pathlib import Path

import pytest

from quotaflow.model.base import ChatMessage, GenerationRequest
from quotaflow.model.loader import RegistryRouter
from quotaflow.model.registry import Aliases, ChecksumMismatch, ModelRegistry, RegistryError


@pytest.fixture
def registry(s3_endpoint: str) -> ModelRegistry:
    reg = ModelRegistry.connect(s3_endpoint, f"models-{uuid.uuid4().hex[:8]}")
    reg.ensure_bucket()
    return reg


def second_version(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of a built model under another version (as a rebuild with a new recipe)."""
    copy = tmp_path / "v2"
    shutil.copytree(model_dir, copy)
    meta = json.loads((copy / "quotaflow.json").read_text())
    meta["version"] = "second0000v2"
    (copy / "quotaflow.json").write_text(json.dumps(meta))
    return copy


def test_push_fetch_verifies_and_caches(registry: ModelRegistry, tiny_model_dir: Path,
                                        tmp_path: Path) -> None:
    version = registry.push(tiny_model_dir)
    listed = registry.versions("smollm2-135m-instruct-tiny")
    assert [m["version"] for m in listed] == [version]
    assert set(listed[0]["files"]) >= {"model.onnx", "tokenizer.json", "quotaflow.json"}
    local = registry.fetch("smollm2-135m-instruct-tiny", version, tmp_path)
    assert (local / "model.onnx").read_bytes() == (tiny_model_dir / "model.onnx").read_bytes()
    assert registry.fetch("smollm2-135m-instruct-tiny", version, tmp_path) == local


def test_checksum_mismatch_is_refused_with_a_clear_error(
        registry: ModelRegistry, tiny_model_dir: Path, tmp_path: Path) -> None:
    version = registry.push(tiny_model_dir)
    key = f"models/smollm2-135m-instruct-tiny/{version}/tokenizer.json"
    registry.s3.put_object(Bucket=registry.bucket, Key=key, Body=b"{}")
    with pytest.raises(ChecksumMismatch, match=r"tokenizer.json has sha256 .* refusing"):
        registry.fetch("smollm2-135m-instruct-tiny", version, tmp_path)
    assert not (tmp_path / "smollm2-135m-instruct-tiny" / version).exists()


def test_promoting_an_unknown_version_is_refused(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no version nope"):
        registry.promote("m", "nope", "stable")


def test_alias_promotion_switches_the_version_infer_uses_without_a_restart(
        registry: ModelRegistry, tiny_model_dir: Path, tmp_path: Path) -> None:
    name = "smollm2-135m-instruct-tiny"
    v1 = registry.push(tiny_model_dir)
    v2 = registry.push(second_version(tiny_model_dir, tmp_path))
    registry.promote(name, v1, "stable")
    router = RegistryRouter(registry, name, tmp_path / "cache", refresh_s=0)
    req = GenerationRequest((ChatMessage("user", "hi"),), 2, request_id="r-1")
    assert router.generate([req])[0].model_version == v1
    registry.promote(name, v2, "stable")
    assert router.generate([req])[0].model_version == v2
    assert router.version == v2


def test_canary_weight_splits_traffic_within_statistical_tolerance() -> None:
    aliases = Aliases(stable="s", canary="c", canary_weight=0.2)
    n = 5000
    canary = sum(aliases.pick(f"request-{i}") == "c" for i in range(n))
    sigma = math.sqrt(n * 0.2 * 0.8)
    assert abs(canary - n * 0.2) < 4 * sigma, canary
    # A request keeps its version on retry.
    assert {aliases.pick("request-7") for _ in range(10)} == {aliases.pick("request-7")}
    assert Aliases("s", "c", 0.0).pick("request-1") == "s"


def test_router_sends_each_request_to_its_canary_or_stable_version(
        registry: ModelRegistry, tiny_model_dir: Path, tmp_path: Path) -> None:
    name = "smollm2-135m-instruct-tiny"
    v1 = registry.push(tiny_model_dir)
    v2 = registry.push(second_version(tiny_model_dir, tmp_path))
    registry.promote(name, v1, "stable")
    registry.promote(name, v2, "canary", weight=0.5)
    router = RegistryRouter(registry, name, tmp_path / "cache", refresh_s=0)
    reqs = [GenerationRequest((ChatMessage("user", "hi"),), 1, request_id=f"q{i}")
            for i in range(40)]
    got = [r.model_version for r in router.generate(reqs)]
    want = [registry.aliases(name).pick(r.request_id) for r in reqs]
    assert got == want
    assert set(got) == {v1, v2}
