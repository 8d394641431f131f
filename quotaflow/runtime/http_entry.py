"""The HTTP CloudEvents entry of a pipeline step: what Knative's KafkaSource calls.

KafkaSource delivers each record as a binary-mode CloudEvent and discards the reply, so the
step produces its outputs to Kafka itself and answers 2xx only after they are flushed; a non-2xx
makes KafkaSource retry and, after its retries, dead-letter the record. An infrastructure error
(PostgreSQL, Redis or Kafka unreachable) is answered 503 with `Retry-After` and never given the
poison treatment: the record is fine, KafkaSource delivers it again.

Each delivery is handled on its own: concurrent deliveries to infer decode together in the
generator (continuous batching), each answered the moment its own request ends."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from quotaflow.adapters import kafka
from quotaflow.compose import wire
from quotaflow.events.catalog import PING_TYPE, SWEEP_TYPE
from quotaflow.events.envelope import Envelope, UndecodableEvent, from_http
from quotaflow.events.payloads import Payload
from quotaflow.runtime import metrics
from quotaflow.runtime.faults import INFRA_RETRIES, error_name, is_infrastructure
from quotaflow.runtime.handling import client_reason, handle_with_retries, publish
from quotaflow.runtime.problem import Problem
from quotaflow.runtime.step import AnyStep, Held, Resources
from quotaflow.settings import Settings

log = logging.getLogger(__name__)


def add_health_routes(app: Flask, ready: Callable[[], bool], settings: Settings) -> None:
    """Liveness and readiness (by `ready()`) routes, and `/metrics` unless the metrics have a
    port of their own (QF_METRICS_PORT: `metrics.serve`)."""

    @app.get("/health/liveness")
    def liveness() -> Response:
        return jsonify(status="ok")

    @app.get("/health/readiness")
    def readiness() -> Response | tuple[Response, int]:
        return (jsonify(status="ready"), 200) if ready() else (jsonify(status="starting"), 503)

    if settings.metrics_port:
        return

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def create_app(step: AnyStep, settings: Settings, ports: Any | None = None,
               producer: kafka.AnyProducer | None = None,
               resources: Resources | None = None) -> Flask:
    """The step's Flask app; its ports are wired from `settings` unless given.
    `app.extensions["quotaflow"]["resources"]` is what it holds open (ready/close)."""
    if ports is None:
        wired = wire(step.name, settings)
        ports, resources = wired.ports, wired.resources
    held = resources or Held()
    producer = producer if producer is not None else kafka.make_producer(settings)
    app = Flask(f"quotaflow.{step.name}")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes * 16
    app.extensions["quotaflow"] = {"ports": ports, "resources": held, "producer": producer,
                                   "step": step}
    add_health_routes(app, held.ready, settings)

    def give_up(_msg: Any, env: Envelope, reason: str) -> Sequence[Payload]:
        # KafkaSource dead-letters on a non-2xx: answer the poison outputs instead when the step
        # has them (a release for a failed inference), so the pipeline goes on.
        if step.on_poison is None:
            raise Problem(500, "Handler failed", reason, slug="handler-failed")
        return step.on_poison(env.payload, client_reason(reason), ports)

    def handle_one(env: Envelope) -> list[Payload]:
        return handle_with_retries(step, ports, settings, [(None, env)], give_up)

    @app.errorhandler(Problem)
    def problem(p: Problem) -> Response:
        return p.response(request.path)

    @app.post("/")
    def receive() -> Response | tuple[Response, int]:
        try:
            return handle_request()
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            INFRA_RETRIES.labels(step.name, error_name(exc)).inc()
            log.warning("step %s: %s: %s; answering 503", step.name, error_name(exc),
                        str(exc)[:300])
            raise Problem(503, "Backing service unavailable",
                          f"{error_name(exc)}: a backing service is unreachable; retry",
                          slug="unavailable", headers={"Retry-After": "2"}) from None

    def handle_request() -> Response | tuple[Response, int]:
        if request.headers.get("ce-type") in (SWEEP_TYPE, PING_TYPE):
            if step.tick is None:
                raise Problem(400, "Bad event", f"step {step.name} does not take {SWEEP_TYPE}")
            outputs = step.tick(ports)
        else:
            try:
                ev = from_http(dict(request.headers), request.get_data())
            except UndecodableEvent as exc:
                # The answer is our own words; what the SDK or Avro said goes to the log.
                log.warning("step %s: undecodable event %s: %s (%s)", step.name,
                            request.headers.get("ce-id", "(no ce-id)")[:200], exc,
                            exc.internal or "no more detail")
                raise Problem(400, "Undecodable event", str(exc)) from None
            if ev.type.name not in step.consumes:
                raise Problem(400, "Unexpected event type",
                              f"step {step.name} consumes {', '.join(step.consumes)}, "
                              f"not {ev.type.ce_type}")
            metrics.EVENTS_IN.labels(step.name, ev.type.name).inc()
            outputs = handle_one(ev)
        sent = publish(step, settings, producer, outputs)
        kafka.flush(producer)
        return jsonify(produced=[env.id for env in sent]), 200

    return app
