"""The model registry on S3 (any S3-compatible store; moto locally and in tests).

    models/<name>/<version>/<file>          the model directory's files
    models/<name>/<version>/manifest.json   {"files": {file: sha256}, ...}
    models/<name>/aliases.json              {"stable": {"version"}, "canary": {"version", "weight"}}

infer resolves name + alias to a version (canary by weight, stable for the rest, stable per
request id so a retried request stays on its version), downloads it once, verifies every
checksum and caches it locally."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ALIASES = ("stable", "canary")


class RegistryError(RuntimeError):
    pass


class ChecksumMismatch(RegistryError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Aliases:
    stable: str | None
    canary: str | None
    canary_weight: float

    def pick(self, request_id: str) -> str:
        """The version for a request: canary for a `canary_weight` share of request ids."""
        if self.canary and self.canary_weight > 0 and request_id:
            bucket = int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            if bucket < self.canary_weight:
                return self.canary
        if self.stable is None:
            raise RegistryError("no stable version promoted yet: quotaflow model promote "
                                "VERSION --alias stable")
        return self.stable


class ModelRegistry:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    @classmethod
    def connect(cls, endpoint_url: str, bucket: str) -> ModelRegistry:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint_url or None,
                          region_name="us-east-1")
        return cls(s3, bucket)

    def ensure_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except Exception:
            self.s3.create_bucket(Bucket=self.bucket)

    def push(self, model_dir: Path, name: str | None = None, progress: Any = None) -> str:
        meta = json.loads((model_dir / "quotaflow.json").read_text())
        name = name or str(meta["name"])
        version = str(meta["version"])
        self.ensure_bucket()
        files = sorted(p for p in model_dir.iterdir() if p.is_file())
        manifest = {"name": name, "version": version,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "files": {p.name: sha256_file(p) for p in files}}
        for p in files:
            if progress:
                progress(f"uploading {p.name} ({p.stat().st_size / 1e6:.1f} MB)")
            self.s3.upload_file(str(p), self.bucket, f"models/{name}/{version}/{p.name}")
        # The manifest goes last: a version without one is an unfinished upload.
        self._put_json(f"models/{name}/{version}/manifest.json", manifest)
        return version

    def versions(self, name: str) -> list[dict[str, Any]]:
        out = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"models/{name}/", Delimiter="/")
        for page in pages:
            for prefix in page.get("CommonPrefixes", []):
                version = prefix["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                manifest = self._get_json(f"models/{name}/{version}/manifest.json")
                if manifest is not None:
                    out.append(manifest)
        return sorted(out, key=lambda m: str(m["created"]))

    def aliases(self, name: str) -> Aliases:
        doc = self._get_json(f"models/{name}/aliases.json") or {}
        canary = doc.get("canary") or {}
        return Aliases(stable=(doc.get("stable") or {}).get("version"),
                       canary=canary.get("version"), canary_weight=float(canary.get("weight", 0)))

    def promote(self, name: str, version: str, alias: str, weight: float = 0.0) -> Aliases:
        if alias not in ALIASES:
            raise RegistryError(f"alias must be one of {', '.join(ALIASES)}")
        if not 0.0 <= weight <= 1.0:
            raise RegistryError("canary weight must be between 0 and 1")
        if self._get_json(f"models/{name}/{version}/manifest.json") is None:
            raise RegistryError(f"no version {version} of {name} in s3://{self.bucket}")
        doc = self._get_json(f"models/{name}/aliases.json") or {}
        doc[alias] = {"version": version, **({"weight": weight} if alias == "canary" else {})}
        self._put_json(f"models/{name}/aliases.json", doc)
        return self.aliases(name)

    def fetch(self, name: str, version: str, cache_dir: Path) -> Path:
        """The local directory of a version: downloaded once, every checksum verified."""
        target = cache_dir / name / version
        if (target / "manifest.json").exists():
            return target
        manifest = self._get_json(f"models/{name}/{version}/manifest.json")
        if manifest is None:
            raise RegistryError(f"no version {version} of {name} in s3://{self.bucket}")
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
        try:
            for file, expected in sorted(manifest["files"].items()):
                local = work / file
                self.s3.download_file(self.bucket, f"models/{name}/{version}/{file}", str(local))
                actual = sha256_file(local)
                if actual != expected:
                    raise ChecksumMismatch(
                        f"{name} {version}: {file} has sha256 {actual[:16]}..., the manifest "
                        f"says {expected[:16]}...; refusing to use it")
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
            work.rename(target)
            log.info("fetched %s %s into %s", name, version, target)
            return target
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

    def _put_json(self, key: str, doc: Any) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(doc, indent=2).encode(),
                           ContentType="application/json")

    def _get_json(self, key: str) -> Any:
        from botocore.exceptions import ClientError

        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (self.s3.exceptions.NoSuchKey, self.s3.exceptions.NoSuchBucket):
            return None
        except ClientError as exc:
            # S3-compatible stores answer a missing key or bucket with a bare 404 on some paths.
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return json.loads(body)
