"""The door's usage page: admit serves its static files under `/ui/` (plain HTML, JS and CSS
with a vendored chart library; nothing is built before running), and the reads the page
makes, with the API key as the bearer key and only for the key's own tenant:

    GET /ui/                    -> the page (`quotaflow/runtime/door/ui/`)
    GET /v1/requests?limit=N    -> {"requests": [...]}: the caller's N (1-100, default 20) most
                                   recent requests, newest first, each as `GET /v1/requests/{id}`
    GET /v1/usage?by=minute|hour|day&group_by=model|key|team&from=TS&to=TS&format=json|csv|table
                                -> the tenant's usage roll-ups, the rows `quotaflow usage` prints
                                   (served when the ports carry a usage reader)
Naming another tenant is a 403; a bad parameter is a 400 problem+json naming it."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify, request, send_from_directory

from quotaflow.analytics.query import FORMATS, BadQuery, UsageQuery, render
from quotaflow.analytics.store import UsageReader
from quotaflow.runtime.door import views
from quotaflow.runtime.door.auth import Authenticator
from quotaflow.runtime.door.ports import DoorPorts
from quotaflow.runtime.problem import Problem
from quotaflow.settings import Settings

UI_DIR = Path(__file__).with_name("ui")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
USAGE_PARAMS = ("tenant", "by", "group_by", "group", "from", "to", "format")
MAX_USAGE_ROWS = 10_000
MIMETYPES = {"csv": "text/csv", "table": "text/plain"}
# The page loads only its own files and talks only to this origin, so a script injected through
# a request's output (shown on the page) could neither run nor send the key anywhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
def parse_limit(raw: str | None) -> int:
    """`?limit=` as a whole number from 1 to `MAX_LIMIT` (`DEFAULT_LIMIT` when absent), or a
    400 naming the parameter."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    # ASCII digits only: `isdigit` alone takes "²" (which `int` refuses) and other scripts'
    # digits, and `int` refuses more than 4,300 of them.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20 and 1 <= int(raw) <= MAX_LIMIT):
        raise Problem(400, "Bad request",
                      f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw[:40]!r}",
                      slug="bad-query", parameter="limit")
    return int(raw)


def blueprint(ports: DoorPorts, settings: Settings, auth: Authenticator) -> Blueprint:
    """The page's routes over the door's ports and authenticator."""
    bp = Blueprint("ui", __name__)

    @bp.after_request
    def harden(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        return resp

    @bp.get("/ui/")
    @bp.get("/ui/<path:name>")
    def ui_file(name: str = "index.html") -> Response:
        resp = send_from_directory(UI_DIR, name)
        resp.headers["Cache-Control"] = "no-cache"  # revalidate: a new release shows at once
        return resp

    @bp.get("/v1/requests")
    def recent_requests() -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""),
                                   request.remote_addr or "")
        limit = parse_limit(request.args.get("limit"))
        found = ports.requests.recent(principal.tenant, limit)
        return jsonify(requests=[views.request_json(v) for v in found])

    if ports.usage is not None:
        _usage_route(bp, auth, ports.usage)
    return bp


def _usage_route(bp: Blueprint, auth: Authenticator, reader: UsageReader) -> None:
    """`GET /v1/usage` on `bp`, reading the roll-ups from `reader`."""

    @bp.get("/v1/usage")
    def get_usage() -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""),
                                   request.remote_addr or "")
        args = request.args
        unknown = sorted(set(args) - set(USAGE_PARAMS))
        if unknown:
            raise Problem(400, "Bad request", f"unknown query parameter {unknown[0][:40]!r}; "
                          f"known: {', '.join(USAGE_PARAMS)}", slug="bad-query",
                          parameter=unknown[0][:40])
        named = args.get("tenant")
        if named and named != principal.tenant:
            raise Problem(403, "Forbidden", f"this key reads only its own tenant's usage "
                          f"({principal.tenant}), not {named!r}")
        fmt = args.get("format") or "json"
        if fmt not in FORMATS:
            raise Problem(400, "Bad request", f"'format' must be one of {', '.join(FORMATS)}, "
                          f"got {fmt[:40]!r}", slug="bad-query", parameter="format")
        try:
            query = UsageQuery.parse({**args.to_dict(), "tenant": principal.tenant})
        except BadQuery as exc:
            raise Problem(400, "Bad request", str(exc), slug="bad-query",
                          parameter=exc.param) from None
        found = reader.usage(query)
        if len(found) > MAX_USAGE_ROWS:
            raise Problem(400, "Bad request", f"{len(found)} rows is more than {MAX_USAGE_ROWS}: "
                          "narrow 'from' and 'to' or use a coarser 'by'", slug="bad-query")
        if fmt == "json":
            return jsonify(found)
        return Response(render(query, found, fmt), mimetype=MIMETYPES[fmt])
