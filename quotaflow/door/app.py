"""admit's HTTP door: POST a CloudEvent, read a request's status, read the tenant's quota.

    POST /  (or /v1/requests)   -> 202 {request_id, status_url}
    GET  /v1/requests/{id}      -> status, output, usage, model
    GET  /v1/quota              -> {tenant, period, granted, reserved, spent, remaining}
Errors are application/problem+json (RFC 9457), never a stack trace; a backing service that
fails answers 503 with Retry-After."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from events.envelope import Envelope
from functions.admit.handler import AdmitPorts, IdempotencyConflict, admit
from quotaflow.door import views, wiring
from quotaflow.door.auth import Authenticator
from quotaflow.door.limits import AdmissionLimits
from quotaflow.door.parse import Limits, parse
from quotaflow.ports import PublishTimeout
from quotaflow.runtime import metrics
from quotaflow.runtime.http_entry import add_health_routes
from quotaflow.runtime.problem import Problem
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.admit")


def create_app(settings: Settings, ports: wiring.DoorPorts | None = None) -> Flask:
    """The door over `ports` (the real ones from `settings` when not given)."""
    ports = ports or wiring.connect(settings)
    auth = Authenticator(ports.tenants)
    limits = AdmissionLimits(ports.gate, ports.clock)
    admit_ports = AdmitPorts(ports.requests, ports.clock)
    parse_limits = Limits(settings.model_name, settings.max_tokens_limit,
                          settings.max_prompt_chars)
    max_body = settings.max_body_bytes
    app = Flask("quotaflow.admit")
    app.extensions["quotaflow"] = {"ports": ports, "resources": ports.resources}
    add_health_routes(app, ports.resources.ready)

    @app.errorhandler(Problem)
    def problem(p: Problem) -> Response:
        metrics.ADMIT_RESPONSES.labels(str(p.status)).inc()
        return p.response(request.path)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return problem(Problem(exc.code or 400, exc.name, exc.description or exc.name))

    @app.errorhandler(IdempotencyConflict)
    def conflict(exc: IdempotencyConflict) -> Response:
        return problem(Problem(409, "Conflict", str(exc), slug="idempotency-conflict"))

    @app.errorhandler(PublishTimeout)
    def unpublished(_exc: PublishTimeout) -> Response:
        return problem(Problem(503, "Service unavailable", "the event bus did not accept the "
                               "request in time; send the same event again",
                               slug="unavailable", headers={"Retry-After": "2"}))

    @app.errorhandler(Exception)
    def unexpected(_exc: Exception) -> Response:
        log.exception("admit failed")
        return problem(Problem(503, "Service unavailable", "a backing service failed; send "
                               "the same event again later", slug="unavailable",
                               headers={"Retry-After": "5"}))

    @app.post("/")
    @app.post("/v1/requests")
    def post_event() -> tuple[Response, int]:
        length = request.content_length
        if length is not None and length > max_body:
            raise Problem(413, "Request too large",
                          f"body is {length} bytes; the limit is {max_body}")
        body = request.stream.read(max_body + 1)
        if len(body) > max_body:
            raise Problem(413, "Request too large",
                          f"body exceeds the limit of {max_body} bytes")
        principal = auth.principal(request.headers.get("Authorization", ""))
        client_request = parse(dict(request.headers), body, parse_limits)
        limits.check(principal, client_request.max_tokens + 1)
        admission = admit(principal, client_request, admit_ports)
        ports.publisher.publish([Envelope.of(p, "admit") for p in admission.admitted])
        metrics.ADMIT_RESPONSES.labels("202").inc()
        status_url = f"{settings.public_url.rstrip('/')}/v1/requests/{admission.request_id}"
        resp = jsonify(request_id=admission.request_id, status_url=status_url)
        resp.headers["Location"] = status_url
        return resp, 202

    @app.get("/v1/requests/<request_id>")
    def get_request(request_id: str) -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""))
        found = ports.requests.fetch(principal.tenant, request_id)
        if found is None:
            raise Problem(404, "Not found", f"no request {request_id} for this tenant")
        return jsonify(views.request_json(found))

    @app.get("/v1/quota")
    def get_quota() -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""))
        period = limits.period(principal)
        balance = ports.balances.balance(principal.tenant, period)
        return jsonify(views.quota_json(principal.tenant, period, balance))

    return app


def create() -> Flask:
    """WSGI factory for gunicorn: `gunicorn 'quotaflow.door.app:create()'`."""
    return create_app(Settings.from_env())
