"""The bare endpoint admit is compared with: Flask that parses the CloudEvent with the SDK and
answers 202, nothing else. Served by the same server command as admit (`benchmarks.door`)."""

from __future__ import annotations

from cloudevents.core.bindings import http as ce_http
from flask import Flask, Response, jsonify, request


def create() -> Flask:
    """The bare app (a factory, as admit's `quotaflow.functions.admit.app:create()`)."""
    app = Flask("bare")

    @app.post("/")
    def post() -> tuple[Response, int]:
        event = ce_http.from_http_event(
            ce_http.HTTPMessage(dict(request.headers), request.get_data()))
        return jsonify(request_id=event.get_id()), 202

    @app.get("/health/readiness")
    def ready() -> str:
        return "ok"

    return app
