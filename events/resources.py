"""Where the repository's declarative files are: beside the package in a wheel or a build
context (quotaflow/events/_data, see pyproject's force-include and `quotaflow func prepare`) or
at the repository root in a checkout (this file resolved through the quotaflow/events symlink
is events/resources.py: its folder's parent is the root)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PKG = Path(__file__).resolve().parent
_ROOT = _PKG.parent


@cache
def data_path(name: str) -> Path:
    """`schemas`, `migrations`, `redis` or `topics.yaml`."""
    packaged = _PKG / "_data" / name
    if packaged.exists():
        return packaged
    in_repo = {
        "schemas": _ROOT / "schemas",
        "migrations": _ROOT / "infra" / "migrations",
        "redis": _ROOT / "infra" / "redis",
        "topics.yaml": _ROOT / "kafka" / "topics.yaml",
    }[name]
    if not in_repo.exists():
        raise FileNotFoundError(f"quotaflow data {name!r} not found in {packaged} or {in_repo}")
    return in_repo
