"""The door's CloudEvents API: POST a CloudEvent, read a request's status, read the tenant's
quota, with the API key as the bearer key and only for the key's own tenant.

    POST /  (or /v1/requests)   -> 202 {request_id, status_url}
    GET  /v1/requests/{id}      -> status, output, usage, model
    GET  /v1/quota              -> {tenant, period, granted, reserved, spent, remaining,
                                    levels: [key, team, tenant]}
A request's token deltas stream from `GET /v1/requests/{id}/events` (`request_events`).
Errors are the app's problem+json (`quotaflow.runtime.door.app`)."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify, request

from quotaflow.runtime.door import views
from quotaflow.runtime.door.accept import Acceptor
from quotaflow.runtime.door.auth import Authenticator
from quotaflow.runtime.door.fair_share import FairShare
from quotaflow.runtime.door.parse import Limits, parse
from quotaflow.runtime.door.ports import DoorPorts
from quotaflow.runtime.problem import Problem
from quotaflow.settings import Settings


def _canonical_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def bad_request_id(text: str) -> Problem:
    """The 400 for a request id that is not one: ids are the UUIDs POST answers."""
    return Problem(400, "Bad request", f"request_id must be a UUID, as POST answers it (request "
                   f"ids are the UUIDs POST answers); got {text[:40]!r}", slug="bad-request-id",
                   parameter="request_id")


def blueprint(ports: DoorPorts, settings: Settings, auth: Authenticator,
              share: FairShare | None = None) -> Blueprint:
    """The routes over the door's ports, settings and authenticator (`share` counts resends
    and 409s per key)."""
    acceptor = Acceptor(ports, share)
    limits = acceptor.limits
    parse_limits = Limits(settings.model_name, settings.max_tokens_limit,
                          settings.max_prompt_chars)
    max_body = settings.max_body_bytes
    bp = Blueprint("cloudevents", __name__)

    @bp.post("/")
    @bp.post("/v1/requests")
    def post_event() -> tuple[Response, int]:
        length = request.content_length
        if length is not None and length > max_body:
            raise Problem(413, "Request too large",
                          f"body is {length} bytes; the limit is {max_body}")
        body = request.stream.read(max_body + 1)
        if len(body) > max_body:
            raise Problem(413, "Request too large",
                          f"body exceeds the limit of {max_body} bytes")
        principal = auth.principal(request.headers.get("Authorization", ""),
                                   request.remote_addr or "")
        client_request = parse(dict(request.headers), body, parse_limits)
        admission = acceptor.accept(principal, client_request, client_request.max_tokens + 1)
        status_url = f"{settings.public_url.rstrip('/')}/v1/requests/{admission.request_id}"
        resp = jsonify(request_id=admission.request_id, status_url=status_url)
        resp.headers["Location"] = status_url
        return resp, 202

    @bp.get("/v1/requests/<request_id>")
    def get_request(request_id: str) -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""),
                                   request.remote_addr or "")
        # Request ids are UUIDs: anything else is a 400, and is not sent to the store.
        if not _canonical_uuid(request_id):
            raise bad_request_id(request_id)
        found = ports.requests.fetch(principal.tenant, request_id)
        if found is None:
            raise Problem(404, "Not found", f"no request {request_id!r} for this tenant; "
                          "request ids are the UUIDs POST answers")
        return jsonify(views.request_json(found))

    @bp.get("/v1/quota")
    def get_quota() -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""),
                                   request.remote_addr or "")
        period = limits.period(principal)
        balance = ports.balances.balance(principal.tenant, period)
        levels = ports.levels.levels(principal.key_id) if ports.levels is not None else []
        return jsonify(views.quota_json(principal.tenant, period, balance, levels))

    return bp
