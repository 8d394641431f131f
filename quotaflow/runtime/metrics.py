"""Prometheus metrics the functions expose: on a port of their own where QF_METRICS_PORT is
set (`serve`; every process on a cluster, and the local Kafka workers), else on the HTTP
entries' `/metrics` (the local door). On a cluster the serving port never answers `/metrics`:
Knative routes only that port, so metrics stay off every route."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

from quotaflow.settings import Settings

EVENTS_IN = Counter("qf_events_consumed_total", "Events a step consumed", ["step", "type"])
EVENTS_OUT = Counter("qf_events_produced_total", "Events a step produced", ["step", "type"])
DEAD_LETTERS = Counter("qf_dead_letters_total", "Records sent to a dead-letter topic",
                       ["step", "reason"])
OFFSET_GAPS = Counter("qf_kafka_offset_gaps_total", "Polled records past the next offset "
                      "expected in their partition (`quotaflow/runtime/gaps.py`): `reread` "
                      "(sought back) or `skipped` (given up after repeated re-reads)",
                      ["step", "outcome"])
HANDLER_SECONDS = Histogram("qf_handler_seconds", "Time in a step's handler per batch", ["step"],
                            buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
BATCH_SIZE = Histogram("qf_batch_size", "Records per handler call", ["step"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
ADMIT_RESPONSES = Counter("qf_admit_responses_total", "Admit answers by status", ["status"])
LEDGER_DECISIONS = Counter("qf_ledger_decisions_total", "Ledger outcomes", ["kind"])


def serve(settings: Settings) -> bool:
    """Serve the metrics on QF_METRICS_PORT at QF_METRICS_ADDR in a background thread, when a
    port is set; whether it did."""
    if not settings.metrics_port:
        return False
    start_http_server(settings.metrics_port, addr=settings.metrics_addr)
    return True
