"""Metrics on a port of their own: with QF_METRICS_PORT set, the serving port has no /metrics
(Knative routes only the serving port, so no route exposes them) and `metrics.serve` answers
them on QF_METRICS_ADDR:QF_METRICS_PORT; without it the local door keeps /metrics."""

from __future__ import annotations

from dataclasses import replace

from flask import Flask

from quotaflow.devstack.process import free_port
from quotaflow.runtime.http_entry import add_health_routes
from quotaflow.settings import Settings


def _app(settings: Settings) -> Flask:
    app = Flask("t")
    add_health_routes(app, lambda: True, settings)
    return app


def test_serving_port_answers_metrics_only_without_a_metrics_port() -> None:
    local = _app(Settings()).test_client()
    assert local.get("/metrics").status_code == 200
    cluster = _app(replace(Settings(), metrics_port=free_port())).test_client()
    assert cluster.get("/metrics").status_code == 404
    assert cluster.get("/health/readiness").status_code == 200


def test_settings_read_the_metrics_address() -> None:
    s = Settings.from_env({"QF_METRICS_PORT": "9464", "QF_METRICS_ADDR": "0.0.0.0"})
    assert (s.metrics_port, s.metrics_addr) == (9464, "0.0.0.0")
