"""admit's HTTP door: POST a CloudEvent, read a request's status, read the tenant's quota.

    POST /  (or /v1/requests)   -> 202 {request_id, status_url}
    GET  /v1/requests/{id}      -> status, output, usage, model
    GET  /v1/quota              -> {tenant, period, granted, reserved, spent, remaining}
Errors are application/problem+json (RFC 9457), never a stack trace. Bad input is a 4xx naming
what was wrong; a backing service that is down (by the type of its error: `UNAVAILABLE`)
answers 503 with Retry-After; anything else is a bug, answered 500 and logged with its trace."""

from __future__ import annotations

import logging
import uuid

import psycopg
import redis
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from functions.admit.handler import IdempotencyConflict
from quotaflow.door import ui_routes, views, wiring
from quotaflow.door.accept import Acceptor
from quotaflow.door.auth import Authenticator
from quotaflow.door.parse import Limits, parse
from quotaflow.ports import PublishTimeout
from quotaflow.runtime import metrics
from quotaflow.runtime.http_entry import add_health_routes
from quotaflow.runtime.problem import Problem
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.admit")

# The errors of a backing service that is down or too slow, as opposed to a bug: PostgreSQL
# unreachable, restarted or past its statement timeout; Redis unreachable or slow; a socket
# refused or timed out; Kafka's local queue full because the broker takes nothing.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, redis.ConnectionError, redis.TimeoutError, ConnectionError,
    TimeoutError, BufferError)


def bad_request_id(text: str) -> Problem:
    """The 400 for a request id that is not one: ids are the UUIDs POST answers."""
    return Problem(400, "Bad request", f"request_id must be a UUID, as POST answers it (request "
                   f"ids are the UUIDs POST answers); got {text[:40]!r}", slug="bad-request-id",
                   parameter="request_id")


def _canonical_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def create_app(settings: Settings, ports: wiring.DoorPorts | None = None) -> Flask:
    """The door over `ports` (the real ones from `settings` when not given)."""
    ports = ports or wiring.connect(settings)
    auth = Authenticator(ports.tenants, settings.auth_cache_ms / 1000,
                         settings.auth_failures_per_s)
    acceptor = Acceptor(ports)
    limits = acceptor.limits
    parse_limits = Limits(settings.model_name, settings.max_tokens_limit,
                          settings.max_prompt_chars)
    max_body = settings.max_body_bytes
    app = Flask("quotaflow.admit")
    app.extensions["quotaflow"] = {"ports": ports, "resources": ports.resources}
    add_health_routes(app, ports.resources.ready)
    app.register_blueprint(ui_routes.blueprint(ports, settings, auth))
    from quotaflow.door.usage import reader_for, usage_blueprint  # GET /v1/usage

    app.register_blueprint(usage_blueprint(auth, reader_for(settings, ports)))
    from quotaflow.door.openai import request_events, routes  # OpenAI API; request SSE

    app.register_blueprint(routes.blueprint(ports, settings, auth, unavailable=UNAVAILABLE))
    app.register_blueprint(request_events.events_blueprint(ports, settings, auth))

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
    def unexpected(exc: Exception) -> Response:
        if isinstance(exc, UNAVAILABLE):
            log.warning("admit: a backing service is unavailable: %s: %s",
                        type(exc).__name__, exc)
            return problem(Problem(503, "Service unavailable", "a backing service failed; "
                                   "send the same event again later", slug="unavailable",
                                   headers={"Retry-After": "5"}))
        log.exception("admit failed unexpectedly")
        return problem(Problem(500, "Internal server error", "admit failed unexpectedly; the "
                               "error is logged", slug="internal"))

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
        admission = acceptor.accept(principal, client_request, client_request.max_tokens + 1)
        status_url = f"{settings.public_url.rstrip('/')}/v1/requests/{admission.request_id}"
        resp = jsonify(request_id=admission.request_id, status_url=status_url)
        resp.headers["Location"] = status_url
        return resp, 202

    @app.get("/v1/requests/<request_id>")
    def get_request(request_id: str) -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""))
        # Request ids are UUIDs: anything else is a 400, and is not sent to the store.
        if not _canonical_uuid(request_id):
            raise bad_request_id(request_id)
        found = ports.requests.fetch(principal.tenant, request_id)
        if found is None:
            raise Problem(404, "Not found", f"no request {request_id!r} for this tenant; "
                          "request ids are the UUIDs POST answers")
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
