"""kafka/examples/consume.py, the standalone consumer, decodes records the project produced on
a real broker with only confluent-kafka, fastavro and schemas/: quotaflow and events cannot
even be imported while it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from quotaflow.adapters.kafka import KafkaPublisher
from quotaflow.events.envelope import Envelope
from quotaflow.events.payloads import Failed
from quotaflow.settings import Settings
from tests.analytics.conftest import make_history
from tests.conftest import REPO

BLOCK_OUR_CODE = """
import runpy, sys
sys.modules["quotaflow"] = None  # any import of them raises ImportError
sys.modules["events"] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_example_prints_every_record_decoded_without_quotaflow_code(
        conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path) -> None:
    history = make_history(conn, settings, requests=6, tenants=("acme",))
    publisher = KafkaPublisher.from_settings(settings)
    publisher.publish(
        [Envelope.of(Failed("acme-3", "acme", 100, "inference failed: test"), "infer")])
    publisher.close()
    events = conn.execute("SELECT seq, tenant_id, stream_version, kind, request_id, amount, "
                          "released FROM ledger_events ORDER BY seq").fetchall()
    expected = len(events) + len(history.completed) + 1
    done = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_OUR_CODE, str(REPO / "kafka/examples/consume.py"),
         "ledger", "completed", "failed", "--bootstrap", settings.kafka_bootstrap,
         "--prefix", settings.topic_prefix, "--schemas", str(REPO / "schemas"),
         "--max-records", str(expected), "--idle-exit", "30"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(printed) == expected, done.stderr
    assert not [p for p in printed if "error" in p]
    ledger = sorted((p for p in printed if p["topic"] == settings.topic("ledger")),
                    key=lambda p: p["data"]["seq"])
    assert [(p["data"]["seq"], p["data"]["tenant"], p["data"]["stream_version"],
             p["data"]["kind"], p["data"]["request_id"], p["data"]["amount"],
             p["data"]["released"]) for p in ledger] == [tuple(e) for e in events]
    assert {p["type"] for p in ledger} == {"dev.quotaflow.ledger.entry"}
    assert all(p["id"] == f"ledger/{p['data']['seq']}" and p["key"] == "acme" for p in ledger)
    completed = {p["data"]["request_id"]: p["data"] for p in printed
                 if p["topic"] == settings.topic("completed")}
    assert {rid: (d["prompt_tokens"], d["completion_tokens"], d["model"], d["device"])
            for rid, d in completed.items()} == {
        c.request_id: (c.prompt_tokens, c.completion_tokens, c.model, c.device)
        for c in history.completed}
    (failed,) = [p for p in printed if p["topic"] == settings.topic("failed")]
    assert failed["data"]["reason"] == "inference failed: test"
    assert failed["dataschema"] == "urn:quotaflow:schema:failed:v1"
