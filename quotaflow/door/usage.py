"""`GET /v1/usage`: the caller's own tenant's usage roll-ups, the rows `quotaflow usage` prints.

    GET /v1/usage?by=minute|hour|day&group=model|key&from=TS&to=TS&format=json|csv|table
The tenant is the key's; naming another one is a 403. Bad parameters are a 400 problem+json
naming the parameter."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from quotaflow.analytics.query import FORMATS, BadQuery, UsageQuery, render
from quotaflow.analytics.store import PostgresUsageStore, UsageReader
from quotaflow.door.auth import Authenticator
from quotaflow.door.wiring import ThreadConnections
from quotaflow.runtime.problem import Problem
from quotaflow.settings import Settings

PARAMS = ("tenant", "by", "group", "from", "to", "format")
MAX_ROWS = 10_000
MIMETYPES = {"csv": "text/csv", "table": "text/plain"}


def reader_for(settings: Settings, ports: Any) -> UsageReader:
    """The roll-ups the door reads: the ports' own `usage` reader when they carry one, else
    PostgreSQL on the door's per-thread connections (or its own, opened on first use)."""
    given: UsageReader | None = getattr(ports, "usage", None)
    if given is not None:
        return given
    connections = getattr(getattr(ports, "resources", None), "connections", None)
    if not isinstance(connections, ThreadConnections):
        connections = ThreadConnections(settings.postgres_url)
    return PostgresUsageStore(connections.get)


def usage_blueprint(auth: Authenticator, reader: UsageReader) -> Blueprint:
    """The route, authenticating with the door's `auth` and reading from `reader`."""
    bp = Blueprint("usage", __name__)

    @bp.get("/v1/usage")
    def get_usage() -> Response:
        principal = auth.principal(request.headers.get("Authorization", ""))
        args = request.args
        unknown = sorted(set(args) - set(PARAMS))
        if unknown:
            raise Problem(400, "Bad request", f"unknown query parameter {unknown[0][:40]!r}; "
                          f"known: {', '.join(PARAMS)}", slug="bad-query",
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
        if len(found) > MAX_ROWS:
            raise Problem(400, "Bad request", f"{len(found)} rows is more than {MAX_ROWS}: "
                          "narrow 'from' and 'to' or use a coarser 'by'", slug="bad-query")
        if fmt == "json":
            return jsonify(found)
        return Response(render(query, found, fmt), mimetype=MIMETYPES[fmt])

    return bp
