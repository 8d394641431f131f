"""admit's HTTP door: POST a CloudEvent, read a request's status, read the tenant's quota.

    POST /  (or /v1/requests)   -> 202 {request_id, status_url}
    GET  /v1/requests/{id}      -> status, output, usage, model
    GET  /v1/quota              -> {period, granted, reserved, spent, remaining}
Errors are application/problem+json (RFC 9457), never a stack trace."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis
from confluent_kafka import Producer
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from events.catalog import event
from events.envelope import Event, to_kafka
from quotaflow.adapters import kafka
from quotaflow.adapters import request_store as requests
from quotaflow.adapters import tenant_store as tenants
from quotaflow.door.parse import ClientRequest, Limits, parse
from quotaflow.ledger.domain import Balance, period_of
from quotaflow.ledger.projection import RedisProjection, balance_key
from quotaflow.runtime import metrics
from quotaflow.runtime.http_entry import add_health_routes
from quotaflow.runtime.problem import Problem
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.admit")
AUTH_CACHE_S = 10.0


class AdmitPorts:
    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings
        self._local = threading.local()
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.projection = RedisProjection(self.redis)
        self.producer = producer or kafka.make_producer(settings)
        self._auth_cache: dict[str, tuple[float, tenants.Principal]] = {}

    @property
    def db(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.settings.postgres_url, autocommit=True)
            self._local.conn = conn
        return conn

    def principal(self, api_key: str) -> tenants.Principal | None:
        """Authenticate, remembering a valid key for AUTH_CACHE_S (revocation takes that long)."""
        now = time.monotonic()
        hit = self._auth_cache.get(api_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = tenants.authenticate(self.db, api_key)
        if found is not None:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[api_key] = (now + AUTH_CACHE_S, found)
        return found

    def ready(self) -> bool:
        try:
            self.db.execute("SELECT 1")
            return bool(self.redis.ping())
        except Exception:
            return False


def _authenticate(ports: AdmitPorts) -> tenants.Principal:
    auth = request.headers.get("Authorization", "")
    scheme, _, key = auth.partition(" ")
    if not auth:
        raise Problem(401, "Unauthorized", "missing Authorization: Bearer <api key>",
                      headers={"WWW-Authenticate": "Bearer"})
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(401, "Unauthorized", "Authorization must be 'Bearer <api key>'",
                      headers={"WWW-Authenticate": "Bearer"})
    principal = ports.principal(key.strip())
    if principal is None:
        raise Problem(401, "Unauthorized", "the API key is not valid or was revoked",
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return principal


def _limits(ports: AdmitPorts, p: tenants.Principal, needs: int) -> None:
    """Per-key rate limit (a fixed one-minute window) and the quota pre-check, in one Redis
    round trip. The pre-check is fast and advisory: reserve decides against the ledger."""
    now = datetime.now(UTC)
    period = period_of(p.plan_period, now)
    window_key = f"qf:rate:{p.key_id}:{int(now.timestamp() // 60)}"
    pipe = ports.redis.pipeline(transaction=False)
    pipe.incr(window_key)
    pipe.expire(window_key, 120)
    pipe.hgetall(balance_key(p.tenant, period))
    count, _, raw = pipe.execute()
    if int(count) > p.rate_limit_per_min:
        retry = max(1, int(60 - now.timestamp() % 60))
        raise Problem(429, "Rate limit exceeded",
                      f"key {p.key_id} may send {p.rate_limit_per_min} requests a minute",
                      slug="rate-limited", headers={"Retry-After": str(retry)})
    b = Balance(*(int(raw.get(k, 0)) for k in (b"granted", b"reserved", b"spent")))
    if b.granted and b.remaining < needs:
        raise Problem(429, "Quota exhausted",
                      f"tenant {p.tenant} has {max(b.remaining, 0)} tokens left in period "
                      f"{period}; this request may need {needs}", slug="quota-exhausted",
                      headers={"Retry-After": str(_seconds_to_next_period(p.plan_period, now))})


def _seconds_to_next_period(plan_period: str, now: datetime) -> int:
    if plan_period == "day":
        nxt = datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() + 86400
    else:
        y, m = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        nxt = datetime(y, m, 1, tzinfo=UTC).timestamp()
    return max(1, int(nxt - now.timestamp()))


def admit(ports: AdmitPorts, p: tenants.Principal, req: ClientRequest) -> tuple[str, bool]:
    """Record the request and hand it on; returns (request_id, created)."""
    request_id = requests.request_id_for(p.tenant, req.source, req.ce_id)
    digest = requests.payload_hash(req.data)
    created, stored_hash, status = requests.insert_request(ports.db, requests.NewRequest(
        request_id, p.tenant, p.key_id, req.source, req.ce_id, digest, req.data["model"]))
    if stored_hash != digest:
        raise Problem(409, "Conflict", f"event id {req.ce_id!r} from source {req.source!r} was "
                      "already sent with a different payload", slug="idempotency-conflict")
    # A resend of a request still queued is published again (the first publish may have been
    # lost); downstream steps are idempotent by request id.
    if created or status == "queued":
        ev = Event(type=event("admitted"), id=f"{request_id}/admitted", source="/quotaflow/admit",
                   tenant=p.tenant, data={**req.data, "request_id": request_id,
                                          "tenant": p.tenant, "key_id": p.key_id,
                                          "admitted_at_ms": datetime.now(UTC)})
        kafka.produce(ports.producer, ports.settings.topic("admitted"), to_kafka(ev))
        try:
            kafka.flush(ports.producer, 10)
        except RuntimeError:
            raise Problem(503, "Service unavailable", "the event bus did not accept the request "
                          "in time; send the same event again", slug="unavailable",
                          headers={"Retry-After": "2"}) from None
    return request_id, created


def create_app(settings: Settings, ports: AdmitPorts | None = None) -> Flask:
    ports = ports or AdmitPorts(settings)
    limits = Limits(settings.model_name, settings.max_tokens_limit, settings.max_prompt_chars)
    app = Flask("quotaflow.admit")
    app.extensions["quotaflow"] = {"ports": ports}
    add_health_routes(app, ports.ready)

    @app.errorhandler(Problem)
    def problem(p: Problem) -> Response:
        metrics.ADMIT_RESPONSES.labels(str(p.status)).inc()
        return p.response(request.path)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 400
        return problem(Problem(status, exc.name, exc.description or exc.name))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("admit failed")
        return problem(Problem(503, "Service unavailable", "a backing service failed; "
                               "send the same event again later", slug="unavailable",
                               headers={"Retry-After": "5"}))

    @app.post("/")
    @app.post("/v1/requests")
    def post_event() -> tuple[Response, int]:
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise Problem(413, "Request too large",
                          f"body is {length} bytes; the limit is {settings.max_body_bytes}")
        body = request.stream.read(settings.max_body_bytes + 1)
        if len(body) > settings.max_body_bytes:
            raise Problem(413, "Request too large",
                          f"body exceeds the limit of {settings.max_body_bytes} bytes")
        principal = _authenticate(ports)
        req = parse(dict(request.headers), body, limits)
        _limits(ports, principal, req.max_tokens + 1)
        request_id, _ = admit(ports, principal, req)
        metrics.ADMIT_RESPONSES.labels("202").inc()
        status_url = f"{settings.public_url.rstrip('/')}/v1/requests/{request_id}"
        resp = jsonify(request_id=request_id, status_url=status_url)
        resp.headers["Location"] = status_url
        return resp, 202

    @app.get("/v1/requests/<request_id>")
    def get_request(request_id: str) -> Response:
        principal = _authenticate(ports)
        found = requests.fetch(ports.db, principal.tenant, request_id)
        if found is None:
            raise Problem(404, "Not found", f"no request {request_id} for this tenant")
        return jsonify(found)

    @app.get("/v1/quota")
    def get_quota() -> Response:
        principal = _authenticate(ports)
        period = period_of(principal.plan_period, datetime.now(UTC))
        b = ports.projection.balance(principal.tenant, period)
        return jsonify(tenant=principal.tenant, period=period, granted=b.granted,
                       reserved=b.reserved, spent=b.spent, remaining=b.remaining)

    return app


def create() -> Flask:
    """WSGI factory for gunicorn: `gunicorn 'functions.admit.app:create()'`."""
    return create_app(Settings.from_env())
