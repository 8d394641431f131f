"""`metrics.serve` answers on a port of its own (a real socket: not a unit test, which runs
with no network)."""

from __future__ import annotations

import urllib.request
from dataclasses import replace

from quotaflow.devstack.process import free_port
from quotaflow.runtime import metrics
from quotaflow.settings import Settings


def test_serve_answers_metrics_on_its_own_port_and_nothing_without_one() -> None:
    assert metrics.serve(Settings()) is False
    port = free_port()
    assert metrics.serve(replace(Settings(), metrics_port=port, metrics_addr="127.0.0.1"))
    metrics.EVENTS_IN.labels("record", "t").inc()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    assert 'qf_events_consumed_total{step="record",type="t"}' in body
