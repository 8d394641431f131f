"""The usage page: admit serves its static files under `/ui/` (plain HTML, JS and CSS with a
vendored chart library; nothing is built before running), and the one read only the page
needs, the caller's recent requests.

    GET /ui/                    -> the page (`quotaflow/door/ui/`)
    GET /v1/requests?limit=N    -> {"requests": [...]}: the caller's N (1-100, default 20) most
                                   recent requests, newest first, each as `GET /v1/requests/{id}`
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify, request, send_from_directory

from quotaflow.door import views
from quotaflow.door.auth import Authenticator
from quotaflow.door.wiring import DoorPorts
from quotaflow.runtime.problem import Problem
from quotaflow.settings import Settings

UI_DIR = Path(__file__).with_name("ui")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
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
        principal = auth.principal(request.headers.get("Authorization", ""))
        limit = parse_limit(request.args.get("limit"))
        found = ports.requests.recent(principal.tenant, limit)
        return jsonify(requests=[views.request_json(v) for v in found])

    return bp
