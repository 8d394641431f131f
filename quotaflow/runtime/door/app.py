"""admit's HTTP door as one Flask app: its three APIs (`cloudevents_api`, `openai_api`,
`usage_page`), health and metrics, and the error ladder they share.

Errors are application/problem+json (RFC 9457), never a stack trace (the OpenAI API answers
OpenAI's error shape instead). Bad input is a 4xx naming what was wrong; a backing service that
is down (`quotaflow.runtime.faults.is_infrastructure`, the steps' and the CLI's classification
too) answers 503 with Retry-After; anything else is a bug, answered 500 and logged with its
trace."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from quotaflow.functions.admit.handler import IdempotencyConflict
from quotaflow.ports import PublishTimeout
from quotaflow.runtime import metrics
from quotaflow.runtime.client_address import TrustedProxies, networks
from quotaflow.runtime.door import cloudevents_api, request_events, usage_page
from quotaflow.runtime.door.fair_share import FairShare, ReadCounting
from quotaflow.runtime.door.openai_api import routes as openai_api
from quotaflow.runtime.door.ports import DoorPorts
from quotaflow.runtime.faults import describe, is_infrastructure
from quotaflow.runtime.http_entry import add_health_routes
from quotaflow.runtime.problem import Problem
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.admit")


def create_app(settings: Settings, ports: DoorPorts | None = None) -> Flask:
    """The door over `ports` (the real ones from `settings` when not given)."""
    if ports is None:
        from quotaflow.compose import connect_door

        ports = connect_door(settings)
    share = FairShare(settings.waits_per_key, settings.reads_per_s_per_key)
    auth = ReadCounting(share, ports.tenants, settings.auth_cache_ms / 1000,
                        settings.auth_failures_per_s,
                        failures_per_s_total=settings.auth_failures_per_s_total)
    app = Flask("quotaflow.admit")
    # werkzeug answers a path with an empty segment (`/v1/requests//events`) with a 308 HTML
    # redirect to the merged path; an empty id is the client's error: 404 problem+json.
    app.url_map.merge_slashes = False
    app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
        app.wsgi_app, networks(settings.trusted_proxies))
    app.extensions["quotaflow"] = {"ports": ports, "resources": ports.resources,
                                   "share": share}
    add_health_routes(app, ports.resources.ready, settings)
    app.register_blueprint(cloudevents_api.blueprint(ports, settings, auth, share))
    app.register_blueprint(request_events.events_blueprint(ports, settings, auth, share))
    app.register_blueprint(openai_api.blueprint(ports, settings, auth, share=share))
    app.register_blueprint(usage_page.blueprint(ports, settings, auth))

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
    def unpublished(exc: PublishTimeout) -> Response:
        log.warning("admit: 503 for %s %s: %s", request.method, request.path, exc)
        return problem(Problem(503, "Service unavailable", "the event bus did not accept the "
                               "request in time; send the same event again",
                               slug="unavailable", headers={"Retry-After": "2"}))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        if is_infrastructure(exc):
            log.warning("admit: 503 for %s %s: %s (%s)", request.method, request.path,
                        describe(exc), type(exc).__name__)
            return problem(Problem(503, "Service unavailable", "a backing service failed; "
                                   "send the same event again later", slug="unavailable",
                                   headers={"Retry-After": "5"}))
        log.exception("admit failed unexpectedly")
        return problem(Problem(500, "Internal server error", "admit failed unexpectedly; the "
                               "error is logged", slug="internal"))

    return app


def create() -> Flask:
    """WSGI factory for gunicorn: `gunicorn 'quotaflow.runtime.door.app:create()'`."""
    return create_app(Settings.from_env())
