"""`GET /v1/requests/{id}/events`: the CloudEvents door's stream of a request's token deltas,
as server-sent events, with the same bearer key and only for the key's own tenant.

    id: 0-1            event: delta    data: {"text": "Paris"}
    id: 0-2            event: delta    data: {"text": " is"}
    ...                event: end      data: {"status", "finish_reason", "usage", ...}
Deltas are published only for a request sent with `data.stream: true`; for any other, and for
one that ended without streaming (rejected, failed), the stream is the record's output, if any,
then `end`. A client that reconnects with `Last-Event-ID` reads on after that entry, with no
gap and no duplicate. Hanging up does not cancel the request, unlike the OpenAI door: here the
request was submitted on its own, and the reader may only be reconnecting."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, request

from quotaflow.model.token_stream import END_ID, START, id_key
from quotaflow.runtime.door.auth import Authenticator
from quotaflow.runtime.door.fair_share import FairShare
from quotaflow.runtime.door.openai_api.relay import Relay, Timing
from quotaflow.runtime.door.openai_api.streaming import HangupBody, request_events
from quotaflow.runtime.door.ports import DoorPorts
from quotaflow.runtime.problem import Problem
from quotaflow.runtime.timeouts import door_wait_s
from quotaflow.settings import Settings

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _request_id(text: str) -> str | None:
    try:
        return text if str(uuid.UUID(text)) == text else None
    except ValueError:
        return None


def _last_event_id(raw: str | None) -> str:
    """Where to read on: after `Last-Event-ID` when it is an id this stream can send (a delta's
    "0-<seq>", or the end's "1-0"), else a 400 naming it, before the stream starts."""
    if not raw:
        return START
    try:
        major, _ = id_key(raw)
    except ValueError:
        major = -1
    if major != 0 and raw != END_ID:
        raise Problem(400, "Bad request", f"Last-Event-ID must be an id this stream sent "
                      f"(like 0-12), got {raw[:40]!r}", slug="bad-last-event-id",
                      parameter="Last-Event-ID")
    return raw


def events_blueprint(ports: DoorPorts, settings: Settings, auth: Authenticator,
                     share: FairShare | None = None, timing: Timing | None = None) -> Blueprint:
    """The route over the door's ports and authenticator; a stream holds one of its key's
    waits (`share`) until it closes."""
    timing = timing or Timing(total_s=door_wait_s(settings))
    share = share or FairShare(settings.waits_per_key, settings.reads_per_s_per_key)
    bp = Blueprint("request_events", __name__)

    @bp.get("/v1/requests/<request_id>/events")
    def request_stream(request_id: str) -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""),
                                   request.remote_addr or "")
        known = _request_id(request_id)
        if known is None:
            raise Problem(400, "Bad request", f"request_id must be a UUID, as POST answers it; "
                          f"got {request_id[:40]!r}", slug="bad-request-id",
                          parameter="request_id")
        if ports.requests.fetch(principal.tenant, known) is None:
            raise Problem(404, "Not found", f"no request {request_id!r} for this tenant; "
                          "request ids are the UUIDs POST answers")
        relay = Relay(ports.stream, ports.requests, principal.tenant, known,
                      _last_event_id(request.headers.get("Last-Event-ID")), timing=timing)
        slot = share.hold(principal.key_id)
        resp = Response(HangupBody(request_events(relay.events()), None),
                        mimetype="text/event-stream", headers=HEADERS)
        resp.call_on_close(slot.release)
        return resp

    return bp
