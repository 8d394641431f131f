"""Avro codec over the schema files in schemas/: raw binary (no container, no registry),
written with the catalog's current version and read with schema resolution, so a reader
decodes records from any older writer version it has the file for."""

from __future__ import annotations

import io
import json
from functools import cache
from typing import Any

import fastavro

from quotaflow.events.resources import data_path


class SchemaNotFound(LookupError):
    pass


class NotOneRecord(ValueError):
    """The payload is not exactly one record: bytes follow it, or it is no record."""


@cache
def schema(name: str, version: int) -> Any:
    path = data_path("schemas") / name / f"v{version}.avsc"
    if not path.exists():
        raise SchemaNotFound(f"no schema {name} v{version} at schemas/{name}/v{version}.avsc")
    with path.open() as f:
        return fastavro.parse_schema(json.load(f))


@cache
def versions(name: str) -> tuple[int, ...]:
    folder = data_path("schemas") / name
    return tuple(sorted(int(p.stem[1:]) for p in folder.glob("v*.avsc")))


def latest_version(name: str) -> int:
    found = versions(name)
    if not found:
        raise SchemaNotFound(f"no schemas for {name!r} in schemas/")
    return found[-1]


def encode(name: str, version: int, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema(name, version), record, strict=True,
                            strict_allow_default=True)
    return buf.getvalue()


def decode(name: str, writer_version: int, payload: bytes,
           reader_version: int | None = None) -> dict[str, Any]:
    """Decode `payload` written with `writer_version`, resolved to `reader_version`
    (default: the newest schema this process has)."""
    reader = latest_version(name) if reader_version is None else reader_version
    buf = io.BytesIO(payload)
    record = fastavro.schemaless_reader(buf, schema(name, writer_version), schema(name, reader))
    if buf.tell() != len(payload):
        raise NotOneRecord(f"{len(payload) - buf.tell()} trailing bytes after a {name} record")
    if not isinstance(record, dict):
        raise NotOneRecord(f"{name} payload is not a record")
    return record
