"""The OpenAI-compatible routes on admit, for any OpenAI client (base URL `<admit>/v1`, the
API key as the bearer key):

    POST /v1/chat/completions   chat, streamed (SSE chunks) or not
    POST /v1/completions        legacy text completions, streamed or not
    GET  /v1/models             the model this deployment serves
    GET  /v1/models/{model}
Every answer carries the request id in `x-request-id` (the completion id is
`chatcmpl-<request id>` / `cmpl-<request id>`); errors are OpenAI's error shape."""

from __future__ import annotations

import logging
from functools import partial

from flask import Blueprint, Response, jsonify, request

from quotaflow.events.status import RequestStatus
from quotaflow.functions.admit.handler import IdempotencyConflict
from quotaflow.ports import Principal, PublishTimeout, RequestView
from quotaflow.runtime.asgi_bridge import DISCONNECTED
from quotaflow.runtime.door.accept import Unpublished
from quotaflow.runtime.door.auth import Authenticator
from quotaflow.runtime.door.fair_share import FairShare
from quotaflow.runtime.door.openai_api import shapes
from quotaflow.runtime.door.openai_api.errors import (
    SERVER,
    OpenAIError,
    from_problem,
    model_not_found,
)
from quotaflow.runtime.door.openai_api.mapping import CHAT, TEXT, Call, parse_call
from quotaflow.runtime.door.openai_api.relay import (
    Ended,
    TimedOut,
    Timing,
    finish_reason,
    first_event,
)
from quotaflow.runtime.door.openai_api.service import OpenAIDoor, answered_status
from quotaflow.runtime.door.openai_api.streaming import (
    HangupBody,
    openai_chunks,
    prepend,
    timed_out,
)
from quotaflow.runtime.door.parse import Limits
from quotaflow.runtime.door.ports import DoorPorts
from quotaflow.runtime.door.strict_json import decode_json
from quotaflow.runtime.faults import describe, is_infrastructure
from quotaflow.runtime.problem import Problem
from quotaflow.runtime.timeouts import door_wait_s
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.admit.openai")
# Before answering a streamed call, wait this long for its first token or its rejection, so a
# request refused by the ledger is an HTTP 429, not an error inside a 200 stream.
FIRST_WAIT_S = 5.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def prompt_param(call: Call) -> str:
    """The field a call's prompt came in: what an error about its length names."""
    return "messages" if call.kind == CHAT else "prompt"


def blueprint(ports: DoorPorts, settings: Settings, auth: Authenticator,
              timing: Timing | None = None, share: FairShare | None = None) -> Blueprint:
    """The routes over the door's ports, settings and authenticator; a backing service down
    (`faults.is_infrastructure`) is a 503 with Retry-After, any other error a 500. Each call
    waiting for its answer, streamed or not, holds one of its key's waits (`share`)."""
    share = share or FairShare(settings.waits_per_key, settings.reads_per_s_per_key)
    door = OpenAIDoor(ports, timing or Timing(total_s=door_wait_s(settings)), share)
    limits = Limits(settings.model_name, settings.max_tokens_limit, settings.max_prompt_chars)
    max_body = settings.max_body_bytes
    bp = Blueprint("openai", __name__)

    @bp.errorhandler(OpenAIError)
    def openai_error(exc: OpenAIError) -> Response:
        return exc.response()

    @bp.errorhandler(Problem)
    def problem(p: Problem) -> Response:
        return from_problem(p).response()

    @bp.errorhandler(IdempotencyConflict)
    def conflict(exc: IdempotencyConflict) -> Response:
        return OpenAIError(409, f"{exc}; use another Idempotency-Key",
                           code="idempotency_conflict").response()

    @bp.errorhandler(PublishTimeout)
    def unpublished(exc: PublishTimeout) -> Response:
        log.warning("openai: 503 for %s: %s", request.path, exc)
        return OpenAIError(503, "the event bus did not accept the request in time; send it "
                           "again", SERVER, "service_unavailable",
                           headers={"Retry-After": "2"}).response()

    @bp.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        if is_infrastructure(exc):
            log.warning("openai: 503 for %s: %s (%s)", request.path, describe(exc),
                        type(exc).__name__)
            return OpenAIError(503, "a backing service failed; send the request again later",
                               SERVER, "service_unavailable",
                               headers={"Retry-After": "5"}).response()
        log.exception("openai door failed unexpectedly")
        return OpenAIError(500, "the server failed unexpectedly; the error is logged",
                           SERVER).response()

    def principal() -> Principal:
        return auth.principal(request.headers.get("Authorization", ""),
                              request.remote_addr or "")

    def body() -> bytes:
        length = request.content_length
        if length is not None and length > max_body:
            raise Problem(413, "Request too large", f"body is {length} bytes; the limit is "
                          f"{max_body}")
        raw = request.stream.read(max_body + 1)
        if len(raw) > max_body:
            raise Problem(413, "Request too large", f"body exceeds {max_body} bytes")
        return raw

    def complete(kind: str) -> Response:
        who = principal()
        call = parse_call(kind, decode_json(body(), "body"), limits)
        # A client's retry of a 5xx is a new request (the official SDKs send no
        # Idempotency-Key; with one, `door.live_attempt` makes the retry a fresh attempt), so
        # a stored request answered 5xx is voided: never billed, even if delivered late.
        slot = share.hold(who.key_id)  # before anything is stored: a 429 costs nothing
        try:
            resp = answered(who, call)
        except BaseException:
            slot.release()
            raise
        if call.stream:  # a stream holds its thread, and its wait, until its body closes
            resp.call_on_close(slot.release)
        else:
            slot.release()
        return resp

    def answered(who: Principal, call: Call) -> Response:
        try:
            request_id = door.submit(who, call, request.headers.get("Idempotency-Key"))
        except Unpublished as exc:
            void(who, exc.request_id, 503)
            raise
        try:
            resp = (streamed if call.stream else whole)(who, request_id, call)
        except Exception as exc:
            status = answered_status(exc)
            # Charged before the void (it ended as the door gave up): answer it, once.
            if status >= 500 and void(who, request_id, status) and not call.stream:
                resp = render(who, request_id, call, door.wait(who, request_id))
            else:
                if isinstance(exc, OpenAIError):  # the request exists: say which
                    exc.headers.setdefault("x-request-id", request_id)
                raise
        resp.headers["x-request-id"] = request_id
        return resp

    def void(who: Principal, request_id: str, status: int) -> bool:
        """Void a request answered `status`; True if the ledger had charged it already (then
        it is answered, not voided). A void that fails leaves the 5xx as it was."""
        try:
            return door.void(who, request_id, f"the door answered {status}").billed
        except Exception:
            log.exception("openai: could not void request %s answered %d", request_id, status)
            return False

    def whole(who: Principal, request_id: str, call: Call) -> Response:
        # Under the Knative entry, set once the client has gone (asgi_bridge).
        gone = request.environ.get(DISCONNECTED)
        view = door.wait(who, request_id, gone.is_set if gone is not None else lambda: False)
        return render(who, request_id, call, view)

    def render(who: Principal, request_id: str, call: Call, view: RequestView) -> Response:
        """A non-streamed call's answer from its ended record."""
        reason = finish_reason(view, call.max_tokens)
        if view.status != RequestStatus.COMPLETED:
            raise door.ended_error(who, Ended(view.status, reason, 0, 0, view),
                                   prompt_param(call))
        used = shapes.usage(view.prompt_tokens or 0, view.completion_tokens or 0,
                            view.charged_tokens or 0)
        answer = door.answer(who, request_id, call)
        return jsonify(shapes.completion(answer, view.output or "", reason, used))

    def streamed(who: Principal, request_id: str, call: Call) -> Response:
        relay = door.relay(who, request_id, call)
        events = relay.events()
        first = first_event(events, FIRST_WAIT_S)
        if isinstance(first, Ended) and first.status != RequestStatus.COMPLETED:
            raise door.ended_error(who, first, prompt_param(call))
        if isinstance(first, TimedOut):
            door.cancel(request_id)
            raise timed_out()
        parts = openai_chunks(door.answer(who, request_id, call), prepend(first, events),
                              ended_error=partial(door.ended_error, who,
                                                  prompt_param=prompt_param(call)),
                              usage_of=partial(door.usage_of, who, request_id),
                              cancel=partial(door.cancel, request_id))

        def hung_up() -> None:
            if relay.ended is None:
                door.cancel(request_id)

        return Response(HangupBody(parts, hung_up), mimetype="text/event-stream",
                        headers=STREAM_HEADERS)

    @bp.post("/v1/chat/completions")
    def chat_completions() -> Response:
        return complete(CHAT)

    @bp.post("/v1/completions")
    def completions() -> Response:
        return complete(TEXT)

    @bp.get("/v1/models")
    def models() -> Response:
        principal()
        return jsonify(object="list", data=[shapes.model_object(settings.model_name)])

    @bp.get("/v1/models/<path:model>")
    def model(model: str) -> Response:
        principal()
        if model != settings.model_name:
            raise model_not_found(model)
        return jsonify(shapes.model_object(model))

    return bp
