#!/usr/bin/env python3
"""Print quotaflow's Kafka records as JSON lines, decoded with nothing but confluent-kafka,
fastavro and the schema files in schemas/ (no quotaflow code).

Each record is a CloudEvent in Kafka binary mode: the `ce_*` headers carry the event's
attributes, `ce_dataschema` names the writer schema as `urn:quotaflow:schema:<name>:v<N>`
(the file schemas/<name>/v<N>.avsc), and the value is raw Avro binary. This reader resolves
every writer schema against the newest version it has (Avro schema resolution), so records
written with an older schema decode too.

    python kafka/examples/consume.py ledger completed --bootstrap 127.0.0.1:9092

It takes the Kafka settings quotaflow's own clients take: KAFKA_BOOTSTRAP_SERVERS, and every
librdkafka property as KAFKA_<PROPERTY> (upper case, dots as underscores), e.g. for a
SASL_SSL cluster with SCRAM:

    export KAFKA_SECURITY_PROTOCOL=SASL_SSL KAFKA_SASL_MECHANISMS=SCRAM-SHA-512
    export KAFKA_SASL_USERNAME=my-reader KAFKA_SASL_PASSWORD=...
    export KAFKA_SSL_CA_LOCATION=/path/to/ca.crt
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
URN = re.compile(r"^urn:quotaflow:schema:([a-z_]+):v(\d+)$")
# The same rule as quotaflow/settings.py (this reader uses no quotaflow code): KAFKA_<PROPERTY>
# sets a librdkafka property; KAFKA_LOG_LEVEL is `log_level` (the one settable property with an
# underscore); the bootstrap servers, the Kafka scripts' and Kubernetes' KAFKA_* variables are
# not client properties.
NOT_CLIENT = re.compile(
    r"KAFKA_(BOOTSTRAP_SERVERS|HOME|LOG_DIR|CLUSTER_ID|([A-Z0-9_]+_)?OPTS"
    r"|([A-Z0-9_]+_)?(PORT|SERVICE_HOST|SERVICE_PORT)(_[A-Z0-9_]+)?)")


def env_client_config(environ: Mapping[str, str]) -> dict[str, str]:
    """The librdkafka properties set by KAFKA_<PROPERTY> variables."""
    return {("log_level" if name == "KAFKA_LOG_LEVEL"
             else name[len("KAFKA_"):].lower().replace("_", ".")): value
            for name, value in environ.items()
            if name.startswith("KAFKA_") and value and not NOT_CLIENT.fullmatch(name)}


class Schemas:
    """Parsed schema files, read once each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._parsed: dict[tuple[str, int], Any] = {}

    def get(self, name: str, version: int) -> Any:
        key = (name, version)
        if key not in self._parsed:
            path = self.root / name / f"v{version}.avsc"
            self._parsed[key] = fastavro.parse_schema(json.loads(path.read_text()))
        return self._parsed[key]

    def newest(self, name: str) -> int:
        return max(int(p.stem[1:]) for p in (self.root / name).glob("v*.avsc"))

    def decode(self, urn: str, value: bytes) -> dict[str, Any]:
        """The record of `value`, written with the schema `urn` names, read with the newest."""
        match = URN.match(urn)
        if not match:
            raise ValueError(f"not a quotaflow schema URN: {urn!r}")
        name, version = match.group(1), int(match.group(2))
        record: dict[str, Any] = fastavro.schemaless_reader(
            io.BytesIO(value), self.get(name, version), self.get(name, self.newest(name)))
        return record


def describe(msg: Any, schemas: Schemas) -> dict[str, Any]:
    """One record as a JSON-ready dictionary: where it was, its CloudEvents attributes, data."""
    headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
    out: dict[str, Any] = {
        "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
        "key": (msg.key() or b"").decode(),
        **{k[3:]: v for k, v in headers.items() if k.startswith("ce_")}}
    try:
        out["data"] = schemas.decode(headers.get("ce_dataschema", ""), msg.value() or b"")
    except Exception as exc:  # a record this reader cannot decode is shown, not fatal
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("topics", nargs="+", help="topic names, with or without the prefix")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS",
                                                         "127.0.0.1:9092"))
    p.add_argument("--prefix", default="quotaflow.", help="prefix added to bare topic names")
    p.add_argument("--group", default=None, help="consumer group (default: a new one, which "
                   "reads each topic from its start)")
    p.add_argument("--schemas", type=Path, default=SCHEMAS, help="the schemas/ folder")
    p.add_argument("--max-records", type=int, default=0, help="stop after this many (0: never)")
    p.add_argument("--idle-exit", type=float, default=0.0,
                   help="stop after this many seconds without a record (0: never)")
    args = p.parse_args(argv)
    topics = [t if t.startswith(args.prefix) else args.prefix + t for t in args.topics]
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group or f"quotaflow-example-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "session.timeout.ms": 6000,  # some brokers join a group only after half of it
        **env_client_config(os.environ),
    })
    consumer.subscribe(topics)
    schemas = Schemas(args.schemas)
    seen, last = 0, time.monotonic()
    try:
        while not (args.max_records and seen >= args.max_records):
            msg = consumer.poll(0.5)
            if msg is None:
                if args.idle_exit and time.monotonic() - last > args.idle_exit:
                    break
                continue
            if msg.error():
                print(f"error: {msg.error()}", file=sys.stderr)
                continue
            print(json.dumps(describe(msg, schemas), default=str, sort_keys=True), flush=True)
            seen, last = seen + 1, time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
